"""Balance monitors: Blnk's `/balance-monitors` rules, and their evaluation after every batch.

A monitor is a condition on one figure of one balance (`monitors_model`). `MonitorHook` is a
`ledger.engine.BatchHook`: inside each batch's database transaction, after its rows are
written and before COMMIT, it looks at every balance the batch changed, compares the figure
the batch left it with, and stages a `balance.monitor` outbox event for each condition that
holds. The alert therefore commits with the change that caused it, or not at all.

Like Blnk, evaluation is level-triggered: a monitor whose condition holds fires for every batch
that changes its balance (Blnk: for every update). Batches sum their postings, so a burst of
postings to one balance in one batch raises at most one alert per monitor.

A balance takes at most `MONITORS_PER_BALANCE_MAX` monitors, the number a batch evaluates per
balance: one more is refused when created or moved there, never silently left unevaluated.

Monitors are read from PostgreSQL through a per-process `MonitorCache` (per balance, bounded in
size and age; Blnk keeps them 5 minutes). Create, update and delete invalidate the cache of the
process that served them; other processes (ledger shards) see the change within
`MONITOR_CACHE_TTL_S`.
"""

from __future__ import annotations

import decimal
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any, Final

import asyncpg

from kit.clock import Clock
from kit.ids import IdPrefix, new_id
from kit.money import InvalidAmountError as MoneyInvalidAmountError
from kit.money import InvalidPrecisionError, parse_decimal, parse_precision
from ledger import monitors_repository, repository
from ledger.errors import BalanceNotFoundError, LedgerValidationError, MonitorNotFoundError
from ledger.monitors_model import COMPARISONS, FIELDS, OPERATOR_ALIASES, Condition, Monitor
from ledger.posting import BalanceState, Book
from ledger.schemas import META_DATA_BYTES_MAX, fits_meta_data
from ledger.wire import timestamp

MONITOR_EVENT: Final = "balance.monitor"
MONITOR_CACHE_TTL_S: Final = 30.0  # how stale another process's view of monitors may get
MONITOR_CACHE_BALANCES_MAX: Final = 100_000  # balances whose monitor lists one process keeps
# A limit on work per touched balance per batch; a balance takes no more (one more would
# never be evaluated).
MONITORS_PER_BALANCE_MAX: Final = 100
DESCRIPTION_LENGTH_MAX: Final = 4096
CALLBACK_URL_LENGTH_MAX: Final = 2048
VALUE_DIGITS_MAX: Final = 40  # a condition's value is a threshold, not a ledger total
# value (<= 40 digits) x precision (<= 10**18) stays exact within this many digits.
_EXACT = decimal.Context(prec=80, traps=[decimal.InvalidOperation, decimal.Overflow])


# ---------------------------------------------------------------- validation


def parse_condition(field: Any, operator: Any, value: Any, precision: Any) -> Condition:
    """Validate a client condition; `precise_value = value x precision`, truncated.

    Raises:
        LedgerValidationError: an unknown field or operator, or a value that is not a number.
    """
    if not isinstance(field, str) or field not in FIELDS:
        raise LedgerValidationError(f"condition.field must be one of {', '.join(sorted(FIELDS))}")
    if not isinstance(operator, str):
        raise LedgerValidationError("condition.operator is required")
    normalised = OPERATOR_ALIASES.get(operator.strip(), operator.strip())
    if normalised not in COMPARISONS:
        raise LedgerValidationError("condition.operator must be one of >, <, >=, <=, !=, ==, =")
    if value is None or precision is None:
        raise LedgerValidationError("condition.value and condition.precision are required")
    try:
        exact = parse_decimal(value)
        multiplier = parse_precision(precision)
    except (MoneyInvalidAmountError, InvalidPrecisionError) as exc:
        raise LedgerValidationError(f"condition: {exc.message}") from exc
    if len(exact.as_tuple().digits) > VALUE_DIGITS_MAX or abs(exact.adjusted()) > VALUE_DIGITS_MAX:
        raise LedgerValidationError(f"condition.value has more than {VALUE_DIGITS_MAX} digits")
    scaled = _EXACT.multiply(exact, Decimal(multiplier))
    precise = int(scaled.to_integral_value(rounding=ROUND_DOWN, context=_EXACT))
    return Condition(
        field=field, operator=normalised, value=exact, precision=multiplier, precise_value=precise
    )


def _text(value: Any, name: str, length_max: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > length_max:
        raise LedgerValidationError(f"{name} must be a string of at most {length_max} characters")
    return value


@dataclass(frozen=True, slots=True)
class MonitorRequest:
    """A validated create or update body."""

    balance_id: str
    condition: Condition
    description: str
    call_back_url: str | None
    meta_data: dict[str, Any]


def parse_request(body: Any) -> MonitorRequest:
    """Validate a POST or PUT `/balance-monitors` body (a parsed JSON object)."""
    if not isinstance(body, dict):
        raise LedgerValidationError("the body must be a JSON object")
    balance_id = body.get("balance_id")
    if not isinstance(balance_id, str) or not balance_id or len(balance_id) > 255:
        raise LedgerValidationError("balance_id is required")
    condition = body.get("condition")
    if not isinstance(condition, dict):
        raise LedgerValidationError("condition is required")
    meta_data = body.get("meta_data") or {}
    if not isinstance(meta_data, dict):
        raise LedgerValidationError("meta_data must be an object")
    if not fits_meta_data(meta_data):
        raise LedgerValidationError(f"meta_data is larger than {META_DATA_BYTES_MAX} bytes")
    callback = body.get("call_back_url")
    return MonitorRequest(
        balance_id=balance_id,
        condition=parse_condition(
            condition.get("field"),
            condition.get("operator"),
            condition.get("value"),
            condition.get("precision"),
        ),
        description=_text(body.get("description"), "description", DESCRIPTION_LENGTH_MAX),
        call_back_url=None
        if callback is None
        else _text(callback, "call_back_url", CALLBACK_URL_LENGTH_MAX),
        meta_data=meta_data,
    )


def request_schema() -> dict[str, Any]:
    """The JSON schema of a POST or PUT `/balance-monitors` body, from the bounds
    `parse_request` enforces; for the OpenAPI document, which cannot see a body read by hand."""
    number = {"anyOf": [{"type": "number"}, {"type": "string"}]}
    return {
        "type": "object",
        "required": ["balance_id", "condition"],
        "properties": {
            "balance_id": {"type": "string", "minLength": 1, "maxLength": 255},
            "condition": {
                "type": "object",
                "required": ["field", "operator", "value", "precision"],
                "properties": {
                    "field": {"type": "string", "enum": sorted(FIELDS)},
                    "operator": {
                        "type": "string",
                        "enum": sorted({*COMPARISONS, *OPERATOR_ALIASES}),
                    },
                    "value": number,
                    "precision": number,
                },
            },
            "description": {"type": ["string", "null"], "maxLength": DESCRIPTION_LENGTH_MAX},
            "call_back_url": {"type": ["string", "null"], "maxLength": CALLBACK_URL_LENGTH_MAX},
            "meta_data": {"type": ["object", "null"]},
        },
    }


def monitor_json(monitor: Monitor) -> dict[str, Any]:
    """A monitor as Blnk returns it (`call_back_url` is write-only and never returned)."""
    return {
        "monitor_id": monitor.monitor_id,
        "balance_id": monitor.balance_id,
        "condition": monitor.condition.to_json(),
        "description": monitor.description,
        "meta_data": monitor.meta_data,
        "created_at": timestamp(monitor.created_at),
    }


# ---------------------------------------------------------------- the cache


class MonitorCache:
    """Monitors per balance, bounded in size (least recently used out) and age."""

    def __init__(
        self,
        *,
        ttl_s: float = MONITOR_CACHE_TTL_S,
        balances_max: int = MONITOR_CACHE_BALANCES_MAX,
        clock: Clock | None = None,
    ) -> None:
        self._ttl_s = ttl_s
        self._balances_max = balances_max
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, tuple[Monitor, ...]]] = OrderedDict()

    def _now(self) -> float:
        return self._clock.monotonic() if self._clock is not None else time.monotonic()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, balance_id: str) -> tuple[Monitor, ...] | None:
        """The cached monitors of a balance (empty when it has none), or None when unknown."""
        entry = self._entries.get(balance_id)
        if entry is None:
            return None
        loaded_at, monitors = entry
        if self._now() - loaded_at > self._ttl_s:
            del self._entries[balance_id]
            return None
        self._entries.move_to_end(balance_id)
        return monitors

    def put(self, balance_id: str, monitors: tuple[Monitor, ...]) -> None:
        """Remember a balance's monitors."""
        self._entries[balance_id] = (self._now(), monitors)
        self._entries.move_to_end(balance_id)
        while len(self._entries) > self._balances_max:
            self._entries.popitem(last=False)

    def invalidate(self, *balance_ids: str) -> None:
        """Forget balances (after their monitors changed)."""
        for balance_id in balance_ids:
            self._entries.pop(balance_id, None)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()


_PROCESS_CACHE = MonitorCache()


def process_monitor_cache() -> MonitorCache:
    """The cache shared by this process's monitor routes and batch hooks."""
    return _PROCESS_CACHE


# ---------------------------------------------------------------- evaluation


def balance_figures_json(state: BalanceState) -> dict[str, Any]:
    """The figures a batch left a balance with."""
    figures = state.figures
    return {
        "balance_id": state.balance_id,
        "currency": state.currency,
        "balance": figures.balance,
        "credit_balance": figures.credit,
        "debit_balance": figures.debit,
        "inflight_balance": figures.inflight,
        "inflight_credit_balance": figures.inflight_credit,
        "inflight_debit_balance": figures.inflight_debit,
    }


def triggered(
    states: list[BalanceState], monitors: dict[str, tuple[Monitor, ...]]
) -> list[tuple[str, str, dict[str, Any]]]:
    """(event type, monitor id, payload) for every monitor whose condition holds."""
    events: list[tuple[str, str, dict[str, Any]]] = []
    for state in states:
        for monitor in monitors.get(state.balance_id, ())[:MONITORS_PER_BALANCE_MAX]:
            if monitor.condition.holds(state.figures):
                payload = {**monitor_json(monitor), "balance": balance_figures_json(state)}
                events.append((MONITOR_EVENT, monitor.monitor_id, payload))
    return events


class MonitorHook:
    """The batch hook that evaluates monitors; pass it in `LedgerEngine(batch_hooks=[...])`."""

    def __init__(self, cache: MonitorCache | None = None) -> None:
        self.cache = cache if cache is not None else process_monitor_cache()

    async def __call__(self, conn: asyncpg.Connection, book: Book, batch_id: int) -> None:
        """Stage `balance.monitor` events for the balances this batch changed."""
        changed = [state for state in book.balances.values() if not state.delta.is_zero()]
        if not changed:
            return
        known: dict[str, tuple[Monitor, ...]] = {}
        unknown: list[str] = []
        for state in changed:
            cached = self.cache.get(state.balance_id)
            if cached is None:
                unknown.append(state.balance_id)
            else:
                known[state.balance_id] = cached
        if unknown:
            loaded = await monitors_repository.monitors_for_balances(conn, unknown)
            for balance_id in unknown:
                monitors = tuple(loaded.get(balance_id, ()))
                self.cache.put(balance_id, monitors)
                known[balance_id] = monitors
        events = triggered(changed, known)
        if events:
            await repository.insert_outbox(
                conn,
                batch_id,
                [
                    (new_id(IdPrefix.EVENT), kind, entity, payload)
                    for kind, entity, payload in events
                ],
            )


# ---------------------------------------------------------------- service


async def _check_balance(conn: asyncpg.Connection, balance_id: str, *, is_arriving: bool) -> None:
    """Refuse a monitor on an unknown balance, or one arriving past what a batch evaluates."""
    if not await monitors_repository.balance_exists(conn, balance_id):
        raise BalanceNotFoundError(f"balance {balance_id} not found", balance_id=balance_id)
    if (
        is_arriving
        and await monitors_repository.lock_monitor_count(conn, balance_id)
        >= MONITORS_PER_BALANCE_MAX
    ):
        raise LedgerValidationError(
            f"balance {balance_id} already has {MONITORS_PER_BALANCE_MAX} monitors",
            balance_id=balance_id,
        )


async def create_monitor(
    conn: asyncpg.Connection, request: MonitorRequest, *, now: datetime, cache: MonitorCache
) -> Monitor:
    """POST /balance-monitors."""
    await _check_balance(conn, request.balance_id, is_arriving=True)
    monitor = Monitor(
        monitor_id=new_id(IdPrefix.MONITOR),
        balance_id=request.balance_id,
        condition=request.condition,
        description=request.description,
        call_back_url=request.call_back_url or "",
        meta_data=request.meta_data,
        created_at=now,
    )
    await monitors_repository.insert_monitor(conn, monitor)
    cache.invalidate(monitor.balance_id)
    return monitor


async def get_monitor(conn: asyncpg.Connection, monitor_id: str) -> Monitor:
    """GET /balance-monitors/{id}."""
    monitor = await monitors_repository.find_monitor(conn, monitor_id)
    if monitor is None:
        raise MonitorNotFoundError(f"balance monitor {monitor_id} not found", monitor_id=monitor_id)
    return monitor


async def update_monitor(
    conn: asyncpg.Connection, monitor_id: str, request: MonitorRequest, *, cache: MonitorCache
) -> None:
    """PUT /balance-monitors/{id}."""
    # Locked: whether the monitor arrives on the balance (and so must be counted) is decided on
    # where it is once any concurrent move of it has committed.
    current = await monitors_repository.find_monitor(conn, monitor_id, for_update=True)
    is_arriving = current is not None and current.balance_id != request.balance_id
    await _check_balance(conn, request.balance_id, is_arriving=is_arriving)
    previous = await monitors_repository.update_monitor(
        conn,
        monitor_id,
        balance_id=request.balance_id,
        condition=request.condition,
        description=request.description,
        call_back_url=request.call_back_url,
    )
    if previous is None:
        raise MonitorNotFoundError(f"balance monitor {monitor_id} not found", monitor_id=monitor_id)
    cache.invalidate(previous, request.balance_id)


async def delete_monitor(conn: asyncpg.Connection, monitor_id: str, *, cache: MonitorCache) -> None:
    """DELETE /balance-monitors/{id}."""
    balance_id = await monitors_repository.delete_monitor(conn, monitor_id)
    if balance_id is None:
        raise MonitorNotFoundError(f"balance monitor {monitor_id} not found", monitor_id=monitor_id)
    cache.invalidate(balance_id)


__all__ = [
    "MONITOR_EVENT",
    "Condition",
    "Monitor",
    "MonitorCache",
    "MonitorHook",
    "create_monitor",
    "delete_monitor",
    "get_monitor",
    "monitor_json",
    "parse_condition",
    "parse_request",
    "process_monitor_cache",
    "update_monitor",
]
