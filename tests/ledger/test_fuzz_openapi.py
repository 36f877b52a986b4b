"""Fuzzing Blnk's API in process: no 5xx, Blnk's error body on every 4xx, books that verify.

Goal: bad input, of any shape a client can send, gets a 4xx in Blnk's error shape and changes
nothing; never a 500, never a stack trace or SQL text in a body. Method: the ledger app runs in
process (`tests/ledger/asgi_harness.py`: the real edge stack, PostgreSQL and Redis) in secure
mode with the master key, so that every route, hooks and API keys included, is reached. Two
generators drive it, both deterministic (`derandomize=True`) and bounded:

- Schemathesis generates requests for every operation of the app's own OpenAPI document, valid
  ones and ones that break the document (negative mode), and sends them through its own
  serialization;
- Hypothesis strategies of our own take a valid body of each main write (transactions, bulk,
  balances, ledgers, identities, monitors, hooks, webhooks), and for each of its fields in
  turn break that field and up to two more: wrong JSON types, numbers past 64 bits, negative
  amounts, NUL and lone surrogates, empty strings, nesting up to past the parser's bound,
  unknown fields, missing fields. Statement uploads (multipart CSV) get the same treatment.

Requests run under CPython's default recursion limit, as on a server (Hypothesis raises it
while a test runs, which hid the deep-nesting 500 this file now guards against).

After each route `dwaybank ledger verify`'s proofs must still hold; a refused transfer must have
left its balance and its reference untouched. Hooks and webhook subscriptions a run creates are
deleted, so no other test's transaction or dispatcher calls them.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.generation.case import Case

from kit.db import Database
from kit.settings import Settings
from tests.ledger.asgi_harness import BASE_URL, LedgerInProcess

pytestmark = pytest.mark.db

FUZZ_MASTER_KEY: Final = "fuzz-master-key"
# Per operation and generation mode: 79 operations x 2 modes x 10 take ~15 s.
EXAMPLES_PER_OPERATION: Final = 10
EXAMPLES_PER_FIELD: Final = 12
EXAMPLES_PER_BODY: Final = 60
FIELDS_BROKEN_MAX: Final = 3
# Past the parser's own bound (orjson: 1,024 levels), so both sides of every bound are tried.
NESTING_LEVELS_MAX: Final = 1_100
DEEP_MARK: Final = "@deep-value-"
# Depths where JSON code changes hands: orjson's writer (255) and reader (1,024) bounds, and
# the interpreter's recursion limit (1,000) that the standard library's writer runs into.
NOTABLE_LEVELS: Final = st.sampled_from([254, 255, 256, 990, 1_000, 1_020, 1_023, 1_024, 1_025])
TEXT_SIZE_MAX: Final = 40
COLLECTION_SIZE_MAX: Final = 3
BODY_PREVIEW_CHARS: Final = 300
# What a body must never carry: a Python stack trace, a driver's name, or SQL.
LEAKS: Final = ("Traceback", 'File "', "asyncpg", "psycopg", "SELECT ", "INSERT INTO", "UPDATE ")


def fuzz_settings(max_examples: int) -> settings:
    """Deterministic, bounded Hypothesis settings: the same examples every run, no deadline (a
    request may wait on PostgreSQL), nothing remembered between runs."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


# ---------------------------------------------------------------- the app and its cleanup


@pytest.fixture(scope="module")
def ledger(settings: Settings, database_dsn: str) -> Iterator[LedgerInProcess]:
    """The ledger app in process, in secure mode; the hooks, webhook subscriptions and reindex
    runs made while it ran are deleted afterwards (the search tests expect no reindex yet)."""
    app = LedgerInProcess(settings, database_dsn, master_key=FUZZ_MASTER_KEY)
    hooks_before, webhooks_before = _hook_ids(app), _webhook_ids(app)
    last_reindex = app.run(_last_reindex_run(app.db))
    yield app
    app.run(_forget_reindex_runs(app.db, after=last_reindex))
    for hook_id in _hook_ids(app) - hooks_before:
        app.request("DELETE", f"/hooks/{hook_id}")
    for subscription_id in _webhook_ids(app) - webhooks_before:
        app.request("DELETE", f"/webhooks/{subscription_id}")
    app.close()


async def _last_reindex_run(db: Database) -> int:
    async with db.connection() as conn:
        run_id: int = await conn.fetchval(
            "SELECT coalesce(max(run_id), 0) FROM ledger.search_reindex_runs"
        )
    return run_id


async def _forget_reindex_runs(db: Database, *, after: int) -> None:
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM ledger.search_reindex_runs WHERE run_id > $1", after)


def _hook_ids(app: LedgerInProcess) -> set[str]:
    return {hook["id"] for hook in app.request("GET", "/hooks").json() or []}


def _webhook_ids(app: LedgerInProcess) -> set[str]:
    return {sub["subscription_id"] for sub in app.request("GET", "/webhooks").json()}


def delete_hooks(app: LedgerInProcess, keep: set[str]) -> None:
    """Delete every hook but `keep`: a hook made by a fuzzed request would call its URL on every
    later transaction."""
    for hook_id in _hook_ids(app) - keep:
        app.request("DELETE", f"/hooks/{hook_id}")


# ---------------------------------------------------------------- what every answer must be


def answer_problems(status: int, text: str) -> list[str]:
    """What is wrong with an answer: a 5xx, a 4xx that is not Blnk's error body, a leak."""
    problems = [f"leaks {leak!r}" for leak in LEAKS if leak in text]
    if status >= 500:
        problems.append(f"status {status}")
    elif status >= 400:
        problems.extend(_blnk_error_problems(text))
    return problems


def _blnk_error_problems(text: str) -> list[str]:
    try:
        body = json.loads(text)
    except ValueError:
        return ["a 4xx body that is not JSON"]
    if not isinstance(body, dict):
        return ["a 4xx body that is not an object"]
    detail = body.get("error_detail")
    if not (
        isinstance(detail, dict)
        and isinstance(detail.get("code"), str)
        and isinstance(detail.get("message"), str)
    ):
        return ["a 4xx body without error_detail{code, message}"]
    # `error`, or Blnk's legacy `errors`, or the hook routes' top-level `code` and `message`.
    if not ("error" in body or "errors" in body or ("code" in body and "message" in body)):
        return ["a 4xx body without error (or errors)"]
    return []


def assert_books_verify(ledger: LedgerInProcess) -> None:
    report = ledger.verify()
    assert report.is_clean, report.findings


# ---------------------------------------------------------------- Schemathesis over the document


class TestOpenApiDocument:
    def test_no_generated_request_gets_a_5xx(self, ledger: LedgerInProcess) -> None:
        """Every operation of the document, fed valid and invalid requests, answers below 500,
        in Blnk's error shape when it refuses, and the books still verify."""
        schema = schemathesis.openapi.from_dict(ledger.request("GET", "/openapi.json").json())
        session = ledger.requests_session()
        hooks_before = _hook_ids(ledger)
        failures: dict[str, str] = {}
        operations = []
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result  # every operation of the document loads
            operations.append(result.ok())
        assert len(operations) > 70  # the whole API is documented, not a few routes

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @fuzz_settings(EXAMPLES_PER_OPERATION)
                @given(case=operation.as_strategy(generation_mode=mode))
                def send(case: Case[Any]) -> None:
                    response = case.call(base_url=BASE_URL, session=session)
                    problems = answer_problems(response.status_code, response.text)
                    if problems and case.operation.label not in failures:
                        failures[case.operation.label] = (
                            f"{problems}: {response.text[:BODY_PREVIEW_CHARS]}\n"
                            f"{case.as_curl_command()[:BODY_PREVIEW_CHARS]}"
                        )
                    if case.operation.path.startswith("/hooks"):
                        delete_hooks(ledger, hooks_before)

                # Unsatisfiable: nothing in the operation can be made invalid (negative mode).
                with contextlib.suppress(Unsatisfiable):
                    send()

        assert failures == {}
        assert_books_verify(ledger)


# ---------------------------------------------------------------- wrong bodies of our own

STRANGE_TEXT: Final = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "USD\x00",
        "\ud800",  # a lone surrogate: valid JSON escape, no valid text
        "\u202e\u0301",
        "\U0001f4b8" * 8,
        "x" * 10_000,
        "-1",
        "1e400",
        "NaN",
        "null",
        "@",
        "@World\x00",
        "bln_" + "0" * 36,
        "general_ledger_id",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "2026-13-45T99:99:99Z",
    ]
)
BIG_NUMBERS: Final = st.sampled_from(
    [0, -1, -(10**40), 2**63, 2**63 - 1, -(2**63) - 1, 2**64, 10**60, 10**400]
)
SCALARS: Final = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    BIG_NUMBERS,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.1, -0.5, 1e308, -1e308, 5e-324, 1e-10]),
    st.text(max_size=TEXT_SIZE_MAX),
    STRANGE_TEXT,
)


@dataclass(frozen=True, slots=True)
class Deep:
    """A value `levels` arrays and objects deep, written as text by `encode_body` (Python's own
    JSON writer runs out of stack before the parser's bound)."""

    levels: int

    def text(self) -> str:
        nested = "1"
        for level in range(self.levels):  # objects and arrays in turn, an object outermost
            nested = f'{{"k":{nested}}}' if (self.levels - level) % 2 else f"[{nested}]"
        return nested


def encode_body(body: Any) -> bytes:
    """`body` as JSON bytes, every `Deep` in it written out."""
    deep: list[Deep] = []

    def mark(value: Any) -> str:
        if not isinstance(value, Deep):
            raise TypeError(type(value).__name__)
        deep.append(value)
        return f"{DEEP_MARK}{len(deep) - 1}"

    text = json.dumps(body, default=mark)
    for index, value in enumerate(deep):
        text = text.replace(json.dumps(f"{DEEP_MARK}{index}"), value.text(), 1)
    return text.encode()


DEEP_VALUES: Final = st.one_of(
    st.integers(min_value=1, max_value=NESTING_LEVELS_MAX), NOTABLE_LEVELS
).map(Deep)
WRONG_VALUES: Final = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=COLLECTION_SIZE_MAX),
    st.dictionaries(st.text(max_size=8) | STRANGE_TEXT, SCALARS, max_size=COLLECTION_SIZE_MAX),
    DEEP_VALUES,
)
UNKNOWN_FIELD: Final = st.sampled_from(["", "\x00", "__proto__", "unknown", "PRECISE_AMOUNT"])
MISSING: Final = object()
REFERENCE_PREFIX: Final = "fuzz-"


@st.composite
def broken(draw: st.DrawFn, valid: dict[str, Any], focus: str | None = None) -> dict[str, Any]:
    """`valid` with its field `focus` (or one picked here) and up to two more given a wrong
    value, or dropped; a nested object may be broken inside, or nested deep, instead. Maybe
    an unknown field too."""
    body = dict(valid)
    names = sorted(valid)
    others = draw(st.lists(st.sampled_from(names), max_size=FIELDS_BROKEN_MAX - 1))
    for name in [focus or draw(st.sampled_from(names)), *others]:
        value = body.get(name, MISSING)
        if isinstance(value, dict) and value and draw(st.booleans()):
            body[name] = draw(broken(value) | DEEP_VALUES)
        elif (
            isinstance(value, list) and value and isinstance(value[0], dict) and draw(st.booleans())
        ):
            body[name] = [draw(broken(value[0])), *value[1:]]
        elif draw(st.integers(min_value=0, max_value=9)) == 0:
            body.pop(name, None)
        else:
            body[name] = draw(WRONG_VALUES)
    if draw(st.booleans()):
        body[draw(UNKNOWN_FIELD)] = draw(WRONG_VALUES)
    return body


@dataclass(frozen=True, slots=True)
class World:
    """Real rows the valid bodies point at."""

    balance_id: str
    other_balance_id: str


def _transfer(world: World) -> dict[str, Any]:
    return {
        "precise_amount": 100,
        "precision": 100,
        "reference": f"{REFERENCE_PREFIX}{uuid.uuid4()}",
        "currency": "USD",
        "description": "fuzz",
        "source": "@WorldUSD",
        "destination": world.balance_id,
        "allow_overdraft": True,
        "skip_queue": True,
        "meta_data": {"k": "v"},
    }


def _split(world: World) -> dict[str, Any]:
    return {
        **_transfer(world),
        "destination": None,
        "destinations": [
            {"identifier": world.balance_id, "distribution": "50%"},
            {"identifier": world.other_balance_id, "distribution": "left"},
        ],
    }


BODIES: Final[dict[str, tuple[str, Callable[[World], dict[str, Any]]]]] = {
    "transaction": ("/transactions", _transfer),
    "split transaction": ("/transactions", _split),
    "inflight transaction": ("/transactions", lambda w: {**_transfer(w), "inflight": True}),
    "bulk": (
        "/transactions/bulk",
        lambda w: {
            "transactions": [_transfer(w), _transfer(w)],
            "atomic": True,
            "skip_queue": True,
        },
    ),
    "balance": (
        "/balances",
        lambda w: {"ledger_id": "general_ledger_id", "currency": "USD", "meta_data": {"k": 1}},
    ),
    "ledger": ("/ledgers", lambda w: {"name": "fuzz", "meta_data": {"k": 1}}),
    "identity": (
        "/identities",
        lambda w: {
            "identity_type": "individual",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email_address": "ada@example.com",
            "dob": "1815-12-10T00:00:00Z",
            "meta_data": {"k": 1},
        },
    ),
    "monitor": (
        "/balance-monitors",
        lambda w: {
            "balance_id": w.balance_id,
            "condition": {"field": "balance", "operator": ">", "value": 10, "precision": 100},
            "description": "fuzz",
            "call_back_url": "https://example.com/monitor",
        },
    ),
    "hook": (
        "/hooks",
        lambda w: {
            "name": "fuzz",
            "url": "https://example.com/hook",
            "type": "POST_TRANSACTION",
            "active": False,
            "timeout": 5,
            "retry_count": 1,
        },
    ),
    "webhook": (
        "/webhooks",
        lambda w: {
            "url": "https://example.com/webhook",
            "event_types": ["transaction.applied"],
            "active": False,
            "description": "fuzz",
        },
    ),
}


def _new_balance(ledger: LedgerInProcess) -> str:
    response = ledger.request(
        "POST", "/balances", json={"ledger_id": "general_ledger_id", "currency": "USD"}
    )
    assert response.status_code == 201, response.text
    balance_id: str = response.json()["balance_id"]
    return balance_id


def _figures(ledger: LedgerInProcess, balance_id: str) -> dict[str, Any]:
    body: dict[str, Any] = ledger.request("GET", f"/balances/{balance_id}").json()
    return {k: v for k, v in body.items() if k.endswith("balance") or k == "version"}


def _fresh_references(body: Any) -> Any:
    """`body` with every template reference (the valid body's) made new, so that one example's
    transaction does not make the next a duplicate."""
    if isinstance(body, dict):
        fresh = {key: _fresh_references(value) for key, value in body.items()}
        reference = body.get("reference")
        if isinstance(reference, str) and reference.startswith(REFERENCE_PREFIX):
            fresh["reference"] = f"{REFERENCE_PREFIX}{uuid.uuid4()}"
        return fresh
    if isinstance(body, list):
        return [_fresh_references(item) for item in body]
    return body


def _references(body: Any) -> list[str]:
    found = [body["reference"]] if isinstance(body, dict) and "reference" in body else []
    items = body.get("transactions") if isinstance(body, dict) else None
    for item in items if isinstance(items, list) else []:
        found.extend(_references(item))
    return [reference for reference in found if isinstance(reference, str) and reference]


def _send_broken(ledger: LedgerInProcess, path: str, body: Any, world: World) -> list[str]:
    """POST `body` to `path`; what is wrong with the answer, and with the books if it was a
    refusal (money moved, a reference recorded; a non-atomic bulk may refuse after a part)."""
    body = _fresh_references(body)
    balances = (world.balance_id, world.other_balance_id)
    before = [_figures(ledger, balance_id) for balance_id in balances]
    content = encode_body(body)
    response = ledger.request(
        "POST", path, content=content, headers={"Content-Type": "application/json"}
    )
    problems = answer_problems(response.status_code, response.text)
    is_atomic = body.get("atomic", True) is True
    if 400 <= response.status_code < 500 and is_atomic:
        if [_figures(ledger, balance_id) for balance_id in balances] != before:
            problems.append("a refused request moved money")
        for reference in _references(body):
            found = ledger.request("GET", "/transactions/reference/" + quote(reference, safe=""))
            if found.status_code == 200:
                problems.append(f"a refused request recorded {reference!r}")
    if not problems:
        return []
    answer = f"{response.status_code} {response.text[:BODY_PREVIEW_CHARS]}"
    return [f"{problems} {answer}\n{content[:BODY_PREVIEW_CHARS]!r}"]


class TestWrongBodies:
    @pytest.mark.parametrize("name", sorted(BODIES))
    def test_a_broken_body_is_refused_in_blnk_shape(
        self, ledger: LedgerInProcess, name: str
    ) -> None:
        """A valid body with fields of wrong types, past-64-bit or negative numbers, NUL, deep
        nesting or unknown fields answers below 500 (Blnk's error body on a 4xx); a refused one
        moved no money and recorded no reference, and the books still verify."""
        path, valid_for = BODIES[name]
        world = World(_new_balance(ledger), _new_balance(ledger))
        hooks_before = _hook_ids(ledger)
        failures: list[str] = []

        valid = valid_for(world)
        for focus in sorted(valid):

            @fuzz_settings(EXAMPLES_PER_FIELD)
            @given(body=broken(valid, focus))
            def send(body: dict[str, Any]) -> None:
                failures.extend(_send_broken(ledger, path, body, world))
                if name == "hook":
                    delete_hooks(ledger, hooks_before)

            send()
        assert failures == []
        assert_books_verify(ledger)


# ---------------------------------------------------------------- statements (multipart, CSV)

STATEMENT_COLUMNS: Final = ("id", "amount", "reference", "currency", "date", "description")
STATEMENT_ROWS_MAX: Final = 3
MULTIPART_BOUNDARY: Final = "fuzz-boundary"
# What a multipart header's quoted file name cannot carry whatever its encoding.
HEADER_BREAKERS: Final = str.maketrans("", "", '"\r\n')


def _cell(value: Any) -> str:
    return "" if value is None else str(value).translate(HEADER_BREAKERS)


def _statement_upload(file_name: str, source: str, rows: list[list[Any]]) -> bytes:
    lines = [",".join(STATEMENT_COLUMNS), *(",".join(_cell(cell) for cell in row) for row in rows)]
    name = file_name.translate(HEADER_BREAKERS).encode("utf-8", "surrogatepass")
    return b"".join(
        [
            f"--{MULTIPART_BOUNDARY}\r\n".encode(),
            b'Content-Disposition: form-data; name="file"; filename="' + name + b'"\r\n',
            b"Content-Type: text/csv\r\n\r\n",
            "\n".join(lines).encode("utf-8", "surrogatepass"),
            f"\r\n--{MULTIPART_BOUNDARY}\r\n".encode(),
            b'Content-Disposition: form-data; name="source"\r\n\r\n',
            source.translate(HEADER_BREAKERS).encode("utf-8", "surrogatepass"),
            f"\r\n--{MULTIPART_BOUNDARY}--\r\n".encode(),
        ]
    )


VALID_ROW: Final = ["ext-1", "10.50", "ref-1", "USD", "2026-01-01T00:00:00Z", "fuzz"]
STATEMENT_CELLS: Final = st.one_of(SCALARS, STRANGE_TEXT)


@st.composite
def statement_rows(draw: st.DrawFn) -> list[list[Any]]:
    """A few rows, each a valid one with some cells (or the cell count) made wrong."""
    rows = []
    for index in range(draw(st.integers(min_value=0, max_value=STATEMENT_ROWS_MAX))):
        row: list[Any] = [f"ext-{index}", *VALID_ROW[1:]]
        for column in draw(st.lists(st.integers(0, len(row) - 1), max_size=len(row))):
            row[column] = draw(STATEMENT_CELLS)
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            row.append("extra")
        rows.append(row)
    return rows


STATEMENT_NAMES: Final = st.one_of(STRANGE_TEXT, st.text(max_size=TEXT_SIZE_MAX))


@st.composite
def broken_statement(draw: st.DrawFn) -> bytes:
    """A valid upload (one good row, a plain file name and source) with one or more of its
    parts made wrong."""
    parts: dict[str, Any] = {"file_name": "statement.csv", "source": "bank", "rows": [VALID_ROW]}
    for part in draw(st.lists(st.sampled_from(sorted(parts)), min_size=1, max_size=len(parts))):
        parts[part] = draw(statement_rows() if part == "rows" else STATEMENT_NAMES)
    return _statement_upload(parts["file_name"], parts["source"], parts["rows"])


class TestWrongStatements:
    def test_a_broken_statement_upload_is_refused_in_blnk_shape(
        self, ledger: LedgerInProcess
    ) -> None:
        """A statement upload with a strange file name or source (NUL, surrogates, empty) and
        wrong cells (numbers past any column, impossible dates) answers below 500, Blnk's error
        body on a 4xx."""
        failures: list[str] = []

        @fuzz_settings(EXAMPLES_PER_BODY)
        @given(content=broken_statement())
        def send(content: bytes) -> None:
            response = ledger.request(
                "POST",
                "/reconciliation/upload",
                content=content,
                headers={"Content-Type": f"multipart/form-data; boundary={MULTIPART_BOUNDARY}"},
            )
            problems = answer_problems(response.status_code, response.text)
            if problems:
                failures.append(f"{problems} {response.text[:BODY_PREVIEW_CHARS]}\n{content!r}")

        send()
        assert failures == []
