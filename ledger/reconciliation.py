"""Reconciliation: external records (a bank statement) matched against the ledger.

An upload is a CSV with a header naming at least `id`, `amount` and `date` (and optionally
`reference`, `currency`, `description`, `source`; other columns are ignored). It is all or
nothing: a malformed row (a NUL character, which PostgreSQL text cannot hold, or a date that
leaves years 1-9999 once in UTC), a duplicate id, or more than 100,000 rows refuses the whole
file with 400 RECON_UPLOAD_FAILED naming the row (Blnk keeps going and reports a 500). Amounts
are exact decimals in major units (a zero is stored as 0 however it is written); dates are
RFC 3339 or `YYYY-MM-DD` (midnight UTC), stored in UTC. Uploads by
URL are refused: no host is allowed (Blnk's default whitelist is empty too), so the server
never fetches a URL on a client's say.

`start` and `start-instant` record a run (with a copy of its rules, so editing a rule later
does not change what the run meant) and hand it to `ReconciliationRunner`, which matches in the
background and writes its progress as it goes; `GET /reconciliation/{id}` reads that record.
The strategies are described in `ledger.reconciliation_runner`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from kit.ids import IdPrefix, new_id, uuid4_text
from kit.money import decimal_places
from ledger import reconciliation_repository as repository
from ledger.errors import LedgerValidationError
from ledger.matching import (
    CRITERIA_MAX,
    RULE_DESCRIPTION_LENGTH_MAX,
    RULE_NAME_LENGTH_MAX,
    Criterion,
    criterion,
    drift_of,
)
from ledger.schemas import NumberOrText
from ledger.surface_errors import (
    ExternalTransactionsRequiredError,
    MatchingRuleInvalidError,
    MatchingRuleNotFoundError,
    MatchingRulesRequiredError,
    ReconciliationNotFoundError,
    UploadFailedError,
)
from ledger.wire import timestamp

UPLOAD_BYTES_MAX: Final = 32 * 1024 * 1024  # a statement of 100,000 rows fits with room
UPLOAD_ROWS_MAX: Final = 100_000
INSTANT_RECORDS_MAX: Final = 10_000  # Blnk's MaxInstantReconciliationItems
RULES_PER_RUN_MAX: Final = 20
MATCHING_RULE_IDS_MAX: Final = (
    100  # parsed at most; more than RULES_PER_RUN_MAX distinct is refused
)
CRITERIA_PARSED_MAX: Final = 100  # parsed at most; more than CRITERIA_MAX is refused
EXTERNAL_ID_LENGTH_MAX: Final = 255
# An external amount's digits on either side of the point: a ledger amount carries at most 60
# (kit.money.MINOR_UNITS_DIGITS_MAX), and PostgreSQL's NUMERIC cannot store 1E+999999999.
AMOUNT_DIGITS_MAX: Final = 60
TEXT_LENGTH_MAX: Final = 255  # reference, source
CURRENCY_LENGTH_MAX: Final = 32
DESCRIPTION_LENGTH_MAX: Final = 4096
GROUPING_LENGTH_MAX: Final = 64
STRATEGIES: Final = ("one_to_one", "one_to_many", "many_to_one")
EXTERNAL_GROUP_KEYS: Final = ("reference", "description", "currency", "source", "date")
_REQUIRED_COLUMNS: Final = ("id", "amount", "date")
_META_GROUP: Final = re.compile(r"^meta_data\.[A-Za-z0-9_\-]{1,53}$")


@dataclass(frozen=True, slots=True)
class ExternalRecord:
    """One line of a statement."""

    external_id: str
    amount: Decimal
    reference: str
    currency: str
    description: str
    occurred_at: datetime | None
    source: str

    def row(self, position: int) -> tuple[Any, ...]:
        """The stored columns, in `repository.EXTERNAL_COLUMNS` order."""
        return (
            position,
            self.external_id,
            self.amount,
            self.reference,
            self.currency,
            self.description,
            self.occurred_at,
            self.source,
        )


# ---------------------------------------------------------------- request bodies


class CriterionIn(BaseModel):
    """One criterion of a matching rule."""

    model_config = ConfigDict(extra="ignore")

    field: str = Field(default="", max_length=32)
    operator: str = Field(default="", max_length=32)
    value: str = ""
    pattern: str = ""
    allowable_drift: NumberOrText = 0


class MatchingRuleIn(BaseModel):
    """POST /reconciliation/matching-rules and PUT .../{id}."""

    model_config = ConfigDict(extra="ignore")

    name: str = ""
    description: str = ""
    criteria: list[CriterionIn] = Field(default_factory=list, max_length=CRITERIA_PARSED_MAX)


class StartIn(BaseModel):
    """POST /reconciliation/start."""

    model_config = ConfigDict(extra="ignore")

    upload_id: str = Field(default="", max_length=64)
    strategy: str = Field(default="", max_length=32)
    matching_rule_ids: list[str] = Field(default_factory=list, max_length=MATCHING_RULE_IDS_MAX)
    dry_run: bool = False
    grouping_criteria: str = Field(default="", max_length=GROUPING_LENGTH_MAX)


class ExternalIn(BaseModel):
    """One external transaction of POST /reconciliation/start-instant."""

    model_config = ConfigDict(extra="ignore")

    id: str = ""
    amount: NumberOrText = 0
    reference: str = ""
    currency: str = ""
    description: str = ""
    date: str = ""
    source: str = ""


class StartInstantIn(StartIn):
    """POST /reconciliation/start-instant."""

    external_transactions: list[ExternalIn] = Field(default_factory=list)


# ---------------------------------------------------------------- external records


def _date(text: str, where: str) -> datetime | None:
    text = text.strip()
    if not text or text == "0001-01-01T00:00:00Z":
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UploadFailedError(
            f"{where}: date {text[:40]!r} is not RFC 3339 or YYYY-MM-DD"
        ) from exc
    if moment.tzinfo is None:
        raise UploadFailedError(f"{where}: date {text[:40]!r} needs a UTC offset")
    try:
        # Stored in UTC: an offset may carry the first or last day of the calendar past it.
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise UploadFailedError(
            f"{where}: date {text[:40]!r} is outside years 1-9999 in UTC"
        ) from exc


def _amount(value: float | int | str, where: str) -> Decimal:
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise UploadFailedError(f"{where}: amount {str(value)[:40]!r} is not a number") from exc
    if not amount.is_finite():
        raise UploadFailedError(f"{where}: amount must be finite")
    if not amount:
        return Decimal(0)  # `0E+999999999` is a zero too, and NUMERIC cannot hold its exponent
    if amount.adjusted() >= AMOUNT_DIGITS_MAX or decimal_places(amount) > AMOUNT_DIGITS_MAX:
        raise UploadFailedError(
            f"{where}: amount has more than {AMOUNT_DIGITS_MAX} digits on a side of the point"
        )
    return amount


def _check_text(text: str, where: str) -> str:
    # PostgreSQL text cannot hold NUL; refused here, the file is refused whole, not a 500.
    if "\x00" in text:
        raise UploadFailedError(f"{where} holds a NUL character")
    return text


def _record(fields: Mapping[str, Any], where: str, *, source: str) -> ExternalRecord:
    external_id = _check_text(str(fields.get("id") or "").strip(), f"{where}: id")
    if not 1 <= len(external_id) <= EXTERNAL_ID_LENGTH_MAX:
        raise UploadFailedError(
            f"{where}: id is required (at most {EXTERNAL_ID_LENGTH_MAX} characters)"
        )
    texts = {
        "reference": TEXT_LENGTH_MAX,
        "currency": CURRENCY_LENGTH_MAX,
        "description": DESCRIPTION_LENGTH_MAX,
    }
    values = {
        name: _check_text(str(fields.get(name) or "").strip(), f"{where}: {name}") for name in texts
    }
    for name, limit in texts.items():
        if len(values[name]) > limit:
            raise UploadFailedError(f"{where}: {name} is longer than {limit} characters")
    record_source = _check_text(
        str(fields.get("source") or source).strip()[:TEXT_LENGTH_MAX], f"{where}: source"
    )
    return ExternalRecord(
        external_id=external_id,
        amount=_amount(fields.get("amount", ""), where),
        reference=values["reference"],
        currency=values["currency"],
        description=values["description"],
        occurred_at=_date(str(fields.get("date") or ""), where),
        source=record_source,
    )


def _unique(records: list[ExternalRecord]) -> list[ExternalRecord]:
    seen: set[str] = set()
    for index, record in enumerate(records, start=1):
        if record.external_id in seen:
            raise UploadFailedError(f"record {index}: id {record.external_id[:64]!r} appears twice")
        seen.add(record.external_id)
    return records


def parse_csv(data: bytes, *, source: str) -> list[ExternalRecord]:
    """A statement's records (CPU-bound: run it off the event loop)."""
    if len(data) > UPLOAD_BYTES_MAX:
        raise UploadFailedError(f"the file is larger than {UPLOAD_BYTES_MAX} bytes")
    _check_text(source, "source")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UploadFailedError("the file is not UTF-8 text") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [name.strip().lower() for name in next(reader, [])]
    missing = [name for name in _REQUIRED_COLUMNS if name not in header]
    if missing:
        raise UploadFailedError(
            f"required column(s) {', '.join(missing)} not found in the CSV header"
        )
    records: list[ExternalRecord] = []
    try:
        for line, cells in enumerate(reader, start=2):
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                raise UploadFailedError(
                    f"row {line}: {len(cells)} fields, the header has {len(header)}"
                )
            if len(records) >= UPLOAD_ROWS_MAX:
                raise UploadFailedError(f"a file holds at most {UPLOAD_ROWS_MAX} rows")
            records.append(
                _record(dict(zip(header, cells, strict=True)), f"row {line}", source=source)
            )
    except csv.Error as exc:
        raise UploadFailedError(f"the CSV is malformed: {exc}") from exc
    if not records:
        raise UploadFailedError("the file holds no records")
    return _unique(records)


def instant_records(items: Sequence[ExternalIn]) -> list[ExternalRecord]:
    """The records of an instant reconciliation (JSON numbers become exact decimals here)."""
    if not items:
        raise ExternalTransactionsRequiredError()
    if len(items) > INSTANT_RECORDS_MAX:
        raise LedgerValidationError(f"too many external_transactions; max is {INSTANT_RECORDS_MAX}")
    return _unique(
        [
            _record(item.model_dump(), f"external_transactions[{index}]", source=item.source)
            for index, item in enumerate(items)
        ]
    )


async def store_upload(
    conn: asyncpg.Connection,
    records: Sequence[ExternalRecord],
    *,
    source: str,
    file_name: str,
    now: datetime,
    instant: bool = False,
) -> str:
    """Store the records under a new upload id."""
    _check_text(file_name, "the file name")  # a multipart header: nothing else has read it
    upload_id = f"{'instant' if instant else 'upload'}_{uuid4_text()}"
    await repository.insert_upload(
        conn,
        upload_id=upload_id,
        source=source[:TEXT_LENGTH_MAX],
        file_name=file_name[:TEXT_LENGTH_MAX],
        records=[record.row(position) for position, record in enumerate(records)],
        created_at=now,
    )
    return upload_id


# ---------------------------------------------------------------- matching rules


def _criteria(body: MatchingRuleIn) -> list[Criterion]:
    if not body.name:
        raise MatchingRuleInvalidError("rule name is required")
    if len(body.name) > RULE_NAME_LENGTH_MAX or len(body.description) > RULE_DESCRIPTION_LENGTH_MAX:
        raise MatchingRuleInvalidError("name or description is too long")
    if not 1 <= len(body.criteria) <= CRITERIA_MAX:
        raise MatchingRuleInvalidError(
            f"at least one matching criteria is required (at most {CRITERIA_MAX})"
        )
    return [
        criterion(c.field, c.operator, c.value, c.pattern, drift_of(c.allowable_drift))
        for c in body.criteria
    ]


def rule_json(row: asyncpg.Record) -> dict[str, Any]:
    """A matching rule as Blnk returns it."""
    return {
        "rule_id": row["rule_id"],
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
        "name": row["name"],
        "description": row["description"],
        "criteria": row["criteria"],
    }


async def create_rule(
    conn: asyncpg.Connection, body: MatchingRuleIn, *, now: datetime
) -> dict[str, Any]:
    """POST /reconciliation/matching-rules."""
    criteria = [c.as_json() for c in _criteria(body)]
    row = await repository.insert_rule(
        conn,
        rule_id=new_id(IdPrefix.RULE),
        name=body.name,
        description=body.description,
        criteria=criteria,
        now=now,
    )
    return rule_json(row)


async def update_rule(
    conn: asyncpg.Connection, rule_id: str, body: MatchingRuleIn, *, now: datetime
) -> dict[str, Any]:
    """PUT /reconciliation/matching-rules/{id}."""
    criteria = [c.as_json() for c in _criteria(body)]
    row = await repository.replace_rule(
        conn, rule_id, name=body.name, description=body.description, criteria=criteria, now=now
    )
    if row is None:
        raise MatchingRuleNotFoundError(f"matching rule {rule_id} not found", rule_id=rule_id)
    return rule_json(row)


async def delete_rule(conn: asyncpg.Connection, rule_id: str) -> None:
    """DELETE /reconciliation/matching-rules/{id}."""
    if not await repository.delete_rule(conn, rule_id):
        raise MatchingRuleNotFoundError(f"matching rule {rule_id} not found", rule_id=rule_id)


# ---------------------------------------------------------------- runs


def _check_strategy(strategy: str, grouping: str) -> None:
    if strategy not in STRATEGIES:
        raise LedgerValidationError("strategy must be one_to_one, one_to_many or many_to_one")
    if strategy == "one_to_one":
        return
    if not grouping:
        raise LedgerValidationError(f"{strategy} needs grouping_criteria")
    if strategy == "one_to_many":
        allowed = [*repository.LEDGER_GROUP_KEYS, "meta_data.<key>"]
        valid = grouping in repository.LEDGER_GROUP_KEYS or _META_GROUP.match(grouping) is not None
    else:
        allowed, valid = list(EXTERNAL_GROUP_KEYS), grouping in EXTERNAL_GROUP_KEYS
    if not valid:
        raise LedgerValidationError(
            f"grouping_criteria for {strategy} is one of {', '.join(allowed)}"
        )


async def _rules(conn: asyncpg.Connection, rule_ids: Sequence[str]) -> list[dict[str, Any]]:
    wanted = list(dict.fromkeys(rule_ids))
    if not wanted:
        raise MatchingRulesRequiredError()
    if len(wanted) > RULES_PER_RUN_MAX:
        raise LedgerValidationError(f"at most {RULES_PER_RUN_MAX} matching rules per run")
    rows = {row["rule_id"]: row for row in await repository.find_rules(conn, wanted)}
    for rule_id in wanted:
        if rule_id not in rows:
            raise MatchingRuleNotFoundError(
                f"matching rule {rule_id[:64]} not found", rule_id=rule_id[:64]
            )
    return [rule_json(rows[rule_id]) for rule_id in wanted]


async def start_run(
    conn: asyncpg.Connection, body: StartIn, *, upload_id: str, now: datetime
) -> str:
    """Record a run (rules copied in); the caller hands its id to the runner after COMMIT."""
    rules = await _rules(conn, body.matching_rule_ids)
    _check_strategy(body.strategy, body.grouping_criteria)
    if await repository.upload_record_count(conn, upload_id) is None:
        raise ReconciliationNotFoundError(
            f"upload {upload_id[:64]} not found", upload_id=upload_id[:64]
        )
    reconciliation_id = new_id(IdPrefix.RECONCILIATION)
    await repository.insert_run(
        conn,
        reconciliation_id=reconciliation_id,
        upload_id=upload_id,
        strategy=body.strategy,
        grouping_criteria=body.grouping_criteria if body.strategy != "one_to_one" else "",
        matching_rule_ids=[rule["rule_id"] for rule in rules],
        rules=rules,
        is_dry_run=body.dry_run,
        now=now,
    )
    return reconciliation_id


def run_json(row: asyncpg.Record) -> dict[str, Any]:
    """A run as Blnk returns it (`completed_at` is null until it finishes)."""
    return {
        "reconciliation_id": row["reconciliation_id"],
        "upload_id": row["upload_id"],
        "status": row["status"],
        "matched_transactions": row["matched_transactions"],
        "unmatched_transactions": row["unmatched_transactions"],
        "is_dry_run": row["is_dry_run"],
        "started_at": timestamp(row["started_at"]),
        "completed_at": None if row["completed_at"] is None else timestamp(row["completed_at"]),
    }


async def get_run(conn: asyncpg.Connection, reconciliation_id: str) -> dict[str, Any]:
    """GET /reconciliation/{id}."""
    row = await repository.find_run(conn, reconciliation_id)
    if row is None:
        raise ReconciliationNotFoundError(reconciliation_id=reconciliation_id[:64])
    return run_json(row)
