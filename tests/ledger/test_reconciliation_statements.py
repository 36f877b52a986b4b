"""Statement uploads as banks and spreadsheets write them, over real HTTP.

Goal: prove that a CSV exported by a bank or a spreadsheet (a byte-order mark, CRLF line ends,
columns in any order and case, quoted fields holding commas and line breaks, signed and
exponent amounts, dates with offsets, blank trailing lines) is stored exactly as written, and
that every file the ledger cannot store whole is refused whole with 400 RECON_UPLOAD_FAILED
naming the row, never a 500 and never half stored. Method: raw bytes posted as a multipart
upload to the ledger server, then the stored records read back from PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kit.db import Database
from ledger.reconciliation import UPLOAD_ROWS_MAX

pytestmark = pytest.mark.db

# Reading a file of 100,000 rows takes seconds on a busy 2-core machine: past httpx's 5 s.
UPLOAD_ANSWER_TIMEOUT_S = 60.0

STREAMED_BYTES = 6 * 1024 * 1024  # past the test edge's 5 MiB body limit


def _upload(ledger_url: str, data: bytes, source: str = "bank") -> httpx.Response:
    return httpx.post(
        f"{ledger_url}/reconciliation/upload",
        files={"file": ("statement.csv", data, "text/csv")},
        data={"source": source},
        timeout=UPLOAD_ANSWER_TIMEOUT_S,
    )


def _refusal(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_detail"]["code"] == "RECON_UPLOAD_FAILED", body
    message: str = body["error"]
    return message


async def _stored(db: Database, upload_id: str) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT external_id, amount, reference, currency, description, occurred_at, source"
            " FROM ledger.external_transactions WHERE upload_id = $1 ORDER BY position",
            upload_id,
        )
    return [dict(row) for row in rows]


async def _upload_count(db: Database) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM ledger.reconciliation_uploads")
    return count


class TestExports:
    async def test_a_spreadsheet_export_is_stored_as_written(
        self, ledger_url: str, db: Database
    ) -> None:
        """BOM, CRLF, reordered upper-case columns, quoted commas and line breaks, signed and
        exponent amounts, an offset date and blank trailing lines: every record exactly."""
        data = (
            "\ufeffDate,AMOUNT,Id,Description,Reference,Source\r\n"
            '2026-03-01T23:30:00-05:00,-12.5,e1,"Rent, March",r1,\r\n'
            '2026-03-02,+3,e2,"two\r\nlines",r2,branch\r\n'
            "2026-03-03T10:00:00.123456789Z,1e3,e3,plain,r3,\r\n"
            "2026-03-04T00:00:00+00:00,0.10,e4,,r4,\r\n"
            "\r\n,,,,,\r\n"
        ).encode()
        response = _upload(ledger_url, data)
        assert response.status_code == 200, response.text
        assert response.json()["record_count"] == 4
        records = await _stored(db, response.json()["upload_id"])
        assert [(r["external_id"], r["amount"]) for r in records] == [
            ("e1", Decimal("-12.5")),
            ("e2", Decimal("3")),
            ("e3", Decimal("1000")),
            ("e4", Decimal("0.10")),
        ]
        assert [r["description"] for r in records] == ["Rent, March", "two\r\nlines", "plain", ""]
        assert [r["occurred_at"] for r in records] == [
            datetime(2026, 3, 2, 4, 30, tzinfo=UTC),
            datetime(2026, 3, 2, tzinfo=UTC),
            datetime(2026, 3, 3, 10, 0, 0, 123456, tzinfo=UTC),
            datetime(2026, 3, 4, tzinfo=UTC),
        ]
        assert [r["source"] for r in records] == ["bank", "branch", "bank", "bank"]

    async def test_only_the_required_columns_are_needed(
        self, ledger_url: str, db: Database
    ) -> None:
        """A file of id, amount and date alone is stored with empty text fields; other
        columns are ignored."""
        data = b"id,amount,date,balance_after\ne1,5,2026-01-01,100\n"
        response = _upload(ledger_url, data, source="")
        assert response.status_code == 200, response.text
        (record,) = await _stored(db, response.json()["upload_id"])
        assert (record["reference"], record["currency"], record["description"]) == ("", "", "")
        assert record["source"] == ""


class TestRefusals:
    @pytest.mark.parametrize(
        ("rows", "expected"),
        [
            ('e1,"1,000.50",2026-01-01', "row 3: amount '1,000.50' is not a number"),
            ("e1,NaN,2026-01-01", "row 3: amount must be finite"),
            ("e1,5,2026-01-01T10:00:00", "row 3: date '2026-01-01T10:00:00' needs a UTC offset"),
            ("e1,5", "row 3: 2 fields, the header has 3"),
            (",5,2026-01-01", "row 3: id is required"),
            ("e0,5,2026-01-01", "record 2: id 'e0' appears twice"),
        ],
    )
    def test_a_bad_row_refuses_the_file_and_names_it(
        self, ledger_url: str, rows: str, expected: str
    ) -> None:
        """The first bad row refuses the whole file, and the message says which row."""
        data = f"id,amount,date\ne0,1,2026-01-01\n{rows}\n".encode()
        assert expected in _refusal(_upload(ledger_url, data))

    async def test_a_file_past_the_row_limit_is_refused(
        self, ledger_url: str, db: Database
    ) -> None:
        """100,001 records refuse the file whole; nothing is stored."""
        rows = "".join(f"e{i},1,2026-01-01\n" for i in range(UPLOAD_ROWS_MAX + 1))
        before = await _upload_count(db)
        message = _refusal(_upload(ledger_url, f"id,amount,date\n{rows}".encode()))
        assert f"at most {UPLOAD_ROWS_MAX} rows" in message
        assert await _upload_count(db) == before

    def test_a_text_past_its_limit_is_refused(self, ledger_url: str) -> None:
        """A currency longer than 32 characters refuses the file."""
        data = f"id,amount,date,currency\ne1,1,2026-01-01,{'X' * 33}\n".encode()
        assert "currency is longer than 32" in _refusal(_upload(ledger_url, data))

    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (b"id,amount,date\n", "no records"),
            (b"id,amount,date\n\n,,\n", "no records"),
            (b"", "required column(s) id, amount, date"),
            ("id,amount,date\ne1,1,2026-01-01,caf\xe9\n".encode("latin-1"), "not UTF-8"),
            (b"id,amount,date,description\ne1,1,2026-01-01," + b"x" * 140_000 + b"\n", "malformed"),
        ],
    )
    def test_a_file_with_nothing_to_store_is_refused(
        self, ledger_url: str, data: bytes, expected: str
    ) -> None:
        """An empty file, a header alone, another encoding, a field past the CSV reader's limit."""
        assert expected in _refusal(_upload(ledger_url, data))

    @pytest.mark.parametrize("amount", ["0E+999999999", "-0E-999999999"])
    async def test_a_zero_written_with_any_exponent_is_stored_as_zero(
        self, ledger_url: str, db: Database, amount: str
    ) -> None:
        """A zero is a zero however it is written (NUMERIC cannot hold these exponents; they
        were a 500)."""
        response = _upload(ledger_url, f"id,amount,date\ne1,{amount},2026-01-01\n".encode())
        assert response.status_code == 200, response.text
        (record,) = await _stored(db, response.json()["upload_id"])
        assert record["amount"] == 0

    @pytest.mark.parametrize("date", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00"])
    async def test_a_date_past_the_calendar_in_utc_is_refused(
        self, ledger_url: str, db: Database, date: str
    ) -> None:
        """A date whose offset takes it outside years 1-9999 in UTC is refused (was a 500)."""
        before = await _upload_count(db)
        message = _refusal(_upload(ledger_url, f"id,amount,date\ne1,1,{date}\n".encode()))
        assert "row 2: date" in message
        assert await _upload_count(db) == before

    @pytest.mark.parametrize("column", ["id", "reference", "description", "source"])
    async def test_a_nul_character_is_refused(
        self, ledger_url: str, db: Database, column: str
    ) -> None:
        """PostgreSQL text cannot hold NUL: a field with one refuses the file (was a 500)."""
        cells = {"id": "e1", "reference": "r", "description": "d", "source": "s"}
        cells[column] += "\x00x"
        data = (
            "id,amount,date,reference,description,source\n"
            f"{cells['id']},1,2026-01-01,{cells['reference']},{cells['description']},"
            f"{cells['source']}\n"
        ).encode()
        before = await _upload_count(db)
        assert "NUL" in _refusal(_upload(ledger_url, data))
        assert await _upload_count(db) == before

    def test_a_nul_in_the_source_part_is_refused(self, ledger_url: str) -> None:
        """The upload's own source is stored too, and is held to the same rule."""
        data = b"id,amount,date\ne1,1,2026-01-01\n"
        assert "NUL" in _refusal(_upload(ledger_url, data, source="bank\x00x"))


class TestRequestShapes:
    def test_json_without_a_url_is_refused(self, ledger_url: str) -> None:
        """A JSON body that names no URL is not an upload: 400 RECON_UPLOAD_FAILED."""
        response = httpx.post(f"{ledger_url}/reconciliation/upload", json={"source": "bank"})
        assert _refusal(response) == "File upload failed"

    def test_another_content_type_is_refused(self, ledger_url: str) -> None:
        """A CSV sent as the raw body (not a form) is refused with a hint."""
        response = httpx.post(
            f"{ledger_url}/reconciliation/upload",
            content=b"id,amount,date\ne1,1,2026-01-01\n",
            headers={"Content-Type": "text/csv"},
        )
        assert "multipart/form-data" in _refusal(response)

    def test_a_form_without_a_file_part_is_refused(self, ledger_url: str) -> None:
        """A form with a source but no file is 400; with a url instead it is the host refusal."""
        response = httpx.post(f"{ledger_url}/reconciliation/upload", files={"source": (None, "b")})
        assert "no file part" in _refusal(response)
        by_url = httpx.post(
            f"{ledger_url}/reconciliation/upload", files={"url": (None, "http://example.com/x")}
        )
        assert by_url.status_code == 400, by_url.text
        assert by_url.json()["error_detail"]["code"] == "RECON_UPLOAD_HOST_NOT_ALLOWED"

    def test_a_streamed_body_past_the_limit_is_413(self, ledger_url: str) -> None:
        """A chunked upload (no Content-Length) that crosses the body limit while the form is
        read is 413 GEN_PAYLOAD_TOO_LARGE, not turned into a 400."""
        boundary = uuid.uuid4().hex

        def body() -> Iterator[bytes]:
            yield (
                f"--{boundary}\r\nContent-Disposition: form-data; name=file; "
                'filename="s.csv"\r\nContent-Type: text/csv\r\n\r\nid,amount,date\r\n'
            ).encode()
            chunk = b"e,1,2026-01-01\r\n" * 4096
            for _ in range(STREAMED_BYTES // len(chunk) + 1):
                yield chunk
            yield f"\r\n--{boundary}--\r\n".encode()

        response = httpx.post(
            f"{ledger_url}/reconciliation/upload",
            content=body(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 413, response.text
        assert response.json()["error_detail"]["code"] == "GEN_PAYLOAD_TOO_LARGE"
