"""List filters: Blnk's `field_op=value` query parameters and the FilterRequest body.

Every field is looked up in a per-collection whitelist that maps it to a column and a type;
values are always bound parameters. Operators: eq, ne, gt, gte, lt, lte, in, between, like,
ilike, isnull, isnotnull. `meta_data.<key>` filters a top-level metadata key as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import InvalidOperation
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from kit.money import InvalidAmountError, parse_decimal
from ledger.errors import FilterParseError, LedgerValidationError
from ledger.wire import check_utc_years

LIMIT_MAX: Final = 100  # Blnk's FilterRequest bound
IN_VALUES_MAX: Final = 500
QUERY_VALUE_LENGTH_MAX: Final = 1000  # Blnk's bound on one query-string filter value (chars)
OFFSET_MAX: Final = 1_000_000
_META_KEY = re.compile(r"^meta_data\.([A-Za-z0-9_\-]{1,64})$")


class Kind(StrEnum):
    """How a column's values are read."""

    TEXT = "text"
    NUMBER = "number"
    TIME = "time"
    BOOL = "bool"


@dataclass(frozen=True, slots=True)
class Collection:
    """A filterable table: its SQL source and its columns."""

    table: str
    columns: Mapping[str, tuple[str, Kind]]
    default_sort: str = "created_at"


_TEXT, _NUMBER, _TIME, _BOOL = Kind.TEXT, Kind.NUMBER, Kind.TIME, Kind.BOOL

COLLECTIONS: Final[dict[str, Collection]] = {
    "ledgers": Collection(
        "ledger.ledgers",
        {
            "ledger_id": ("ledger_id", _TEXT),
            "name": ("name", _TEXT),
            "created_at": ("created_at", _TIME),
        },
    ),
    "balances": Collection(
        "ledger.balances",
        {
            name: (name, kind)
            for name, kind in {
                "balance_id": _TEXT,
                "ledger_id": _TEXT,
                "identity_id": _TEXT,
                "indicator": _TEXT,
                "currency": _TEXT,
                "balance": _NUMBER,
                "credit_balance": _NUMBER,
                "debit_balance": _NUMBER,
                "inflight_balance": _NUMBER,
                "inflight_credit_balance": _NUMBER,
                "inflight_debit_balance": _NUMBER,
                "version": _NUMBER,
                "created_at": _TIME,
            }.items()
        },
    ),
    "transactions": Collection(
        "ledger.transactions",
        {
            name: (name, kind)
            for name, kind in {
                "transaction_id": _TEXT,
                "parent_transaction": _TEXT,
                "source": _TEXT,
                "destination": _TEXT,
                "reference": _TEXT,
                "currency": _TEXT,
                "status": _TEXT,
                "description": _TEXT,
                "precise_amount": _NUMBER,
                "precision": _NUMBER,
                "allow_overdraft": _BOOL,
                "inflight": _BOOL,
                "created_at": _TIME,
                "effective_date": _TIME,
                "scheduled_for": _TIME,
            }.items()
        },
    ),
    "identities": Collection(
        "ledger.identities",
        {
            name: (name, kind)
            for name, kind in {
                "identity_id": _TEXT,
                "identity_type": _TEXT,
                "first_name": _TEXT,
                "last_name": _TEXT,
                "organization_name": _TEXT,
                "email_address": _TEXT,
                "phone_number": _TEXT,
                "country": _TEXT,
                "category": _TEXT,
                "created_at": _TIME,
            }.items()
        },
    ),
}

_OPERATORS: Final = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


class FilterIn(BaseModel):
    """One condition of a FilterRequest."""

    model_config = ConfigDict(extra="ignore")

    field: str = Field(min_length=1, max_length=128)
    operator: str = Field(min_length=1, max_length=16)
    value: Any = None
    values: list[Any] | None = None


class FilterRequest(BaseModel):
    """POST /{collection}/filter."""

    model_config = ConfigDict(extra="ignore")

    filters: list[FilterIn] = Field(default_factory=list, max_length=50)
    logical_operator: str = "and"
    limit: int = Field(default=20, ge=1, le=LIMIT_MAX)
    offset: int = Field(default=0, ge=0, le=OFFSET_MAX)
    sort_by: str | None = None
    sort_order: str = "desc"
    include_count: bool = False


@dataclass(slots=True)
class Query:
    """A WHERE clause under construction, with its bound arguments."""

    conditions: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def bind(self, value: Any) -> str:
        """Add a parameter; returns its placeholder."""
        self.args.append(value)
        return f"${len(self.args)}"

    def bind_as(self, value: Any, kind: Kind, *, is_list: bool = False) -> str:
        """Add a parameter of a column's kind. A number is bound as NUMERIC whatever its column:
        bound against an integer column (`version`) the driver would truncate 0.5 to 0 and fail
        on 10^20, where the comparison must be the number's own."""
        placeholder = self.bind(value)
        if kind is not Kind.NUMBER:
            return placeholder
        return f"{placeholder}::numeric[]" if is_list else f"{placeholder}::numeric"


def _coerce(value: Any, kind: Kind, field_name: str) -> Any:
    if value is None:
        raise LedgerValidationError(f"filter on {field_name} needs a value")
    try:
        if kind is Kind.NUMBER:
            return parse_decimal(str(value))  # bounded: 1E+999999999 is refused, not encoded
        if kind is Kind.TIME:
            return check_utc_years(
                value
                if isinstance(value, datetime)
                else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            )
        if kind is Kind.BOOL:
            if isinstance(value, bool):
                return value
            return {"true": True, "1": True, "false": False, "0": False}[str(value).lower()]
    except (InvalidOperation, ValueError, KeyError, InvalidAmountError) as exc:
        raise LedgerValidationError(f"invalid value for {field_name}") from exc
    return str(value)


def _column(collection: Collection, name: str) -> tuple[str, Kind]:
    meta = _META_KEY.match(name)
    if meta is not None:
        return f"(meta_data ->> '{meta.group(1)}')", Kind.TEXT
    found = collection.columns.get(name)
    if found is None:
        raise LedgerValidationError(f"cannot filter on {name!r}")
    return found


def add_condition(
    query: Query,
    collection: Collection,
    name: str,
    operator: str,
    value: Any,
    *,
    values: Sequence[Any] | None = None,
) -> None:
    """Append one condition."""
    column, kind = _column(collection, name)
    op = operator.lower()
    if op in _OPERATORS:
        query.conditions.append(
            f"{column} {_OPERATORS[op]} {query.bind_as(_coerce(value, kind, name), kind)}"
        )
    elif op == "in":
        items = list(values) if values is not None else [v for v in str(value).split(",") if v]
        if not 1 <= len(items) <= IN_VALUES_MAX:
            raise LedgerValidationError(f"in takes 1 to {IN_VALUES_MAX} values")
        coerced = [_coerce(v, kind, name) for v in items]
        query.conditions.append(f"{column} = ANY({query.bind_as(coerced, kind, is_list=True)})")
    elif op == "between":
        items = list(values) if values is not None else str(value).split("|")
        if len(items) != 2:
            raise LedgerValidationError("between takes two values")
        low, high = (_coerce(v, kind, name) for v in items)
        query.conditions.append(
            f"{column} BETWEEN {query.bind_as(low, kind)} AND {query.bind_as(high, kind)}"
        )
    elif op in {"like", "ilike"}:
        if kind is not Kind.TEXT:
            raise LedgerValidationError(f"{op} applies to text fields only")
        query.conditions.append(f"{column} {op.upper()} {query.bind(str(value))}")
    elif op == "isnull":
        query.conditions.append(f"{column} IS NULL")
    elif op == "isnotnull":
        query.conditions.append(f"{column} IS NOT NULL")
    else:
        raise LedgerValidationError(f"unknown filter operator {operator!r}")


_QUERY_OPERATORS: Final = {*_OPERATORS, "in", "between", "like", "ilike", "isnull", "isnotnull"}


def _parse_problem(op: str, value: str) -> str | None:
    """What stops one `field_op=value` parameter from parsing (Blnk's `filter.ParseFromQuery`
    checks), or None. The field, the operator's fit and the value's type are checked later."""
    if len(value) > QUERY_VALUE_LENGTH_MAX:
        return f"value exceeds maximum length ({QUERY_VALUE_LENGTH_MAX} chars)"
    if op == "between" and len(value.split("|")) != 2:
        return "between operator requires exactly 2 pipe-separated values (value1|value2)"
    if op == "in" and len(value.split(",")) > IN_VALUES_MAX:
        return f"IN operator exceeds maximum values ({IN_VALUES_MAX})"
    return None


def from_query_params(
    collection: Collection, params: Mapping[str, str], *, skip: set[str]
) -> Query:
    """`field_op=value` parameters (and plain `field=value`, meaning eq) to conditions.

    Raises:
        FilterParseError: parameters that do not parse, every one of them listed (as Blnk's).
        LedgerValidationError: an unknown field, or a value that does not fit its field.
    """
    parsed: list[tuple[str, str, str]] = []
    problems: list[tuple[str, str]] = []
    for key, value in params.items():
        if key in skip:
            continue
        name, _, op = key.rpartition("_")
        if not name or op not in _QUERY_OPERATORS:
            name, op = key, "eq"
        problem = _parse_problem(op, value)
        if problem is None:
            parsed.append((name, op, value))
        else:
            problems.append((key, problem))
    if problems:
        raise FilterParseError.of(problems)
    query = Query()
    for name, op, value in parsed:
        add_condition(query, collection, name, op, value)
    return query


def sql_for(
    collection: Collection,
    query: Query,
    *,
    joiner: str,
    sort_by: str | None,
    sort_order: str,
    limit: int,
    offset: int,
    columns: str,
) -> tuple[str, str, list[Any]]:
    """(select sql, count sql, args)."""
    where = f" WHERE {(' ' + joiner + ' ').join(query.conditions)}" if query.conditions else ""
    sort_column = collection.columns.get(sort_by or "", (collection.default_sort, Kind.TIME))[0]
    direction = "ASC" if sort_order.lower() == "asc" else "DESC"
    args = list(query.args)
    select = (
        f"SELECT {columns} FROM {collection.table}{where} ORDER BY {sort_column} {direction}"  # noqa: S608 - whitelisted identifiers, bound values
        f" LIMIT {int(limit)} OFFSET {int(offset)}"
    )
    count = f"SELECT count(*) FROM {collection.table}{where}"  # noqa: S608 - whitelisted identifiers, bound values
    return select, count, args
