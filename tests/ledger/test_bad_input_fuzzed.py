"""Bad input that fuzzing the ledger found answered with a 500; each is a 4xx in Blnk's error
shape now, and changes nothing.

Raw HTTP (httpx) against the real server, as in `test_bad_input.py`: the SDK would not send
these bodies. `tests/ledger/test_fuzz_openapi.py` is the fuzzer that keeps looking.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Final

import httpx
import pytest

from kit.db import Database
from ledger.schemas import JSON_DEPTH_MAX
from tests.ledger.servers import UA

pytestmark = pytest.mark.db

# Past the interpreter's recursion limit for the fallback JSON writer, within what the parser
# reads (orjson's 1,024 levels): the depth that used to reach the writer and fail there.
DEEP_LEVELS: Final = 1_000
DEEP_MARK: Final = "@deep@"
STATEMENT: Final = (
    b"id,amount,reference,currency,date,description\n1,10,r,USD,2024-01-01T00:00:00Z,d\n"
)


def _nested(levels: int) -> Any:
    value: Any = 1
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


def _post_deep(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST `body` with its `meta_data` nested DEEP_LEVELS levels deep, as JSON text written
    here: the client's own JSON writer cannot write it."""
    nested = "1"
    for level in range(DEEP_LEVELS):
        nested = f"[{nested}]" if level % 2 else f'{{"k":{nested}}}'
    meta_data = f'{{"k":{nested}}}'
    text = json.dumps({**body, "meta_data": DEEP_MARK}).replace(json.dumps(DEEP_MARK), meta_data)
    return http.post(path, content=text, headers={"Content-Type": "application/json"})


def _balance(http: httpx.Client) -> str:
    response = http.post("/balances", json={"ledger_id": "general_ledger_id", "currency": "USD"})
    assert response.status_code == 201
    balance_id: str = response.json()["balance_id"]
    return balance_id


def _transfer(destination: str, meta_data: Any) -> dict[str, Any]:
    return {
        "precise_amount": 100,
        "precision": 100,
        "reference": f"deep-{uuid.uuid4()}",
        "currency": "USD",
        "source": "@WorldUSD",
        "destination": destination,
        "allow_overdraft": True,
        "skip_queue": True,
        "meta_data": meta_data,
    }


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_detail"]["code"] == "GEN_MALFORMED_REQUEST"
    assert "nest" in body["error_detail"]["message"]


class TestDeepNesting:
    def test_a_transaction_nested_too_deep_is_refused_and_writes_nothing(
        self, http: httpx.Client
    ) -> None:
        """Metadata nested 1,000 levels deep is 400 GEN_MALFORMED_REQUEST (it was a 500: the
        JSON writer ran out of stack storing it) and no money moves."""
        balance_id = _balance(http)
        body = _transfer(balance_id, None)
        _refused(_post_deep(http, "/transactions", body))
        assert http.get(f"/balances/{balance_id}").json()["balance"] == 0
        assert http.get(f"/transactions/reference/{body['reference']}").status_code == 404

    @pytest.mark.parametrize(
        ("path", "body"),
        [
            ("/balances", {"ledger_id": "general_ledger_id", "currency": "USD"}),
            ("/ledgers", {"name": "deep"}),
            ("/identities", {"first_name": "deep"}),
        ],
    )
    def test_other_writes_nested_too_deep_are_refused(
        self, http: httpx.Client, path: str, body: dict[str, Any]
    ) -> None:
        """Balances, ledgers and identities with metadata nested 1,000 levels deep are 400
        GEN_MALFORMED_REQUEST, not 500."""
        _refused(_post_deep(http, path, body))

    def test_the_deepest_body_allowed_is_stored_and_read_back(self, http: httpx.Client) -> None:
        """A body exactly JSON_DEPTH_MAX levels deep (the body itself is one) is taken, its
        metadata read back equal; one level more is refused."""
        balance_id = _balance(http)
        meta = {"k": _nested(JSON_DEPTH_MAX - 2)}  # body -> meta_data -> JSON_DEPTH_MAX - 2
        created = http.post("/transactions", json=_transfer(balance_id, meta))
        assert created.status_code == 201, created.text
        stored = http.get(f"/transactions/{created.json()['transaction_id']}").json()
        assert stored["meta_data"] == meta
        _refused(http.post("/transactions", json=_transfer(balance_id, {"k": meta})))


class TestUploadFileName:
    async def test_a_file_name_with_nul_is_refused(
        self, api: httpx.AsyncClient, db: Database
    ) -> None:
        """A statement whose multipart file name holds NUL is 400 RECON_UPLOAD_FAILED (it was
        a 500: PostgreSQL's text cannot hold NUL) and no upload is stored."""
        async with db.connection() as conn:
            before = await conn.fetchval("SELECT count(*) FROM ledger.reconciliation_uploads")
        content = (
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a\x00b.csv"\r\n'
            b"Content-Type: text/csv\r\n\r\n" + STATEMENT + b"\r\n--XyZ\r\n"
            b'Content-Disposition: form-data; name="source"\r\n\r\nbank\r\n--XyZ--\r\n'
        )
        response = await api.post(
            "/reconciliation/upload",
            content=content,
            headers={**UA, "Content-Type": "multipart/form-data; boundary=XyZ"},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == "RECON_UPLOAD_FAILED"
        async with db.connection() as conn:
            after = await conn.fetchval("SELECT count(*) FROM ledger.reconciliation_uploads")
        assert after == before
