"""Internal types of the ledger: records read from PostgreSQL and the commands the engine runs.

Commands are frozen, picklable dataclasses: the ingress builds them (minting ids, converting
client decimals to minor units once), Ray ships them to a shard, the engine executes them. An
`Outcome` is what the engine answers per command: an HTTP status with Blnk's wire body, or the
domain error to render.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import operator
import re
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any, Final, TypeVar

from kit.errors import AppError

GENERAL_LEDGER_ID = "general_ledger_id"


class Effect(StrEnum):
    """What a stored transaction did to its two balances."""

    NONE = "none"  # queued, scheduled or rejected: nothing moved
    APPLIED = "applied"  # debit the source, credit the destination
    INFLIGHT = "inflight"  # hold: the inflight pair instead
    COMMIT = "commit"  # move (part of) a hold from inflight to applied
    VOID = "void"  # release what a hold had left


class TransactionStatus(StrEnum):
    """Blnk's statuses (COMMIT is internal to Blnk and never stored here)."""

    QUEUED = "QUEUED"
    SCHEDULED = "SCHEDULED"
    APPLIED = "APPLIED"
    INFLIGHT = "INFLIGHT"
    VOID = "VOID"
    REJECTED = "REJECTED"


_Model = TypeVar("_Model")


def _pickled_by_fields(cls: type[_Model]) -> type[_Model]:
    """Pickle instances as their class and field values, rebuilt by the class itself.

    Commands, outcomes and their records cross the shard boundary by the thousand (pickled by
    Ray on both sides). A slots dataclass pickles through `__getstate__` / `__setstate__`, which
    walk `dataclasses.fields()` for every object: ~31 us per posting there and back. One C-level
    attribute getter and the generated `__init__` do the same in about a third of that."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]  # always a dataclass here
    getter = operator.attrgetter(*names)
    if len(names) == 1:

        def reduce(self: object) -> tuple[type[_Model], tuple[Any, ...]]:
            return cls, (getter(self),)

    else:

        def reduce(self: object) -> tuple[type[_Model], tuple[Any, ...]]:
            return cls, getter(self)

    cls.__reduce__ = reduce  # type: ignore[method-assign]
    return cls


_DEFAULT_FROM_FACTORY: Final = object()  # a field left to its default_factory
# A currency code as every ledger table's CHECK spells it (balances, transactions, rates).
CURRENCY_CODE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,32}$")
# An indicator balance's name as the balances table's trigger spells it (migration 0112).
INDICATOR_NAME: Final = re.compile(r"^@\S{1,254}$")


def _built_fast(cls: type[_Model]) -> type[_Model]:
    """Give a frozen slots dataclass an `__init__` that stores its fields ~4 times faster.

    A frozen dataclass's own `__init__` stores every field through `object.__setattr__` (the
    class's `__setattr__` refuses), ~120 ns a field: 3-4 us for a transaction record or a command,
    paid for every posting the engine writes and for every command and outcome unpickled on
    either side of a shard. A plain slots class with the same fields in the same order (its
    twin) has the same memory layout and takes ordinary attribute stores (~15 ns). This
    `__init__`, generated like dataclasses' own (same parameters, defaults and factories), makes
    the new instance a twin for its stores and then makes it the frozen class again: it is never
    seen half-built or mutable, and afterwards it is exactly what the frozen `__init__` builds
    (a test compares the two, field by field and by equality, for every command and record)."""
    params = fields(cls)  # type: ignore[arg-type]  # always a dataclass here
    if not cls.__dataclass_params__.frozen or hasattr(cls, "__post_init__"):  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__}: only a frozen dataclass without __post_init__")
    twin = dataclasses.make_dataclass(
        f"{cls.__name__}Fields",
        [(f.name, f.type) for f in params],
        init=False,
        repr=False,
        eq=False,
        slots=True,
    )
    if twin.__slots__ != cls.__slots__ or twin.__base__ is not cls.__base__:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__}: its twin would not share its layout")
    namespace: dict[str, Any] = {
        "_set": object.__setattr__,
        "_twin": twin,
        "_cls": cls,
        "_FACTORY": _DEFAULT_FROM_FACTORY,
    }
    arguments, stores = [], []
    for f in params:
        if f.default is not dataclasses.MISSING:
            namespace[f"_default_{f.name}"] = f.default
            arguments.append(f"{f.name}=_default_{f.name}")
            stores.append(f"self.{f.name} = {f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            arguments.append(f"{f.name}=_FACTORY")
            stores.append(
                f"self.{f.name} = _factory_{f.name}() if {f.name} is _FACTORY else {f.name}"
            )
        else:
            arguments.append(f.name)
            stores.append(f"self.{f.name} = {f.name}")
    source = "\n    ".join(
        [
            f"def __init__(self, {', '.join(arguments)}):",
            "_set(self, '__class__', _twin)",
            "try:",
            *(f"    {line}" for line in stores),
            "finally:",
            "    _set(self, '__class__', _cls)",
        ]
    )
    exec(source, namespace)  # noqa: S102 - generated from the class's own field names
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__signature__ = inspect.signature(cls.__init__)
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


@_pickled_by_fields
@dataclass(slots=True)
class Figures:
    """The four stored amounts of a balance, in minor units."""

    credit: int = 0
    debit: int = 0
    inflight_credit: int = 0
    inflight_debit: int = 0

    @property
    def balance(self) -> int:
        """`credit - debit`."""
        return self.credit - self.debit

    @property
    def inflight(self) -> int:
        """`inflight_credit - inflight_debit`."""
        return self.inflight_credit - self.inflight_debit

    @property
    def available(self) -> int:
        """What can be debited: the balance less every outstanding hold."""
        return self.balance - self.inflight_debit

    def copy(self) -> Figures:
        """An independent copy."""
        return Figures(self.credit, self.debit, self.inflight_credit, self.inflight_debit)

    def add(self, delta: Figures) -> None:
        """Apply a signed change."""
        self.credit += delta.credit
        self.debit += delta.debit
        self.inflight_credit += delta.inflight_credit
        self.inflight_debit += delta.inflight_debit

    def is_zero(self) -> bool:
        """True when nothing changes."""
        return not (self.credit or self.debit or self.inflight_credit or self.inflight_debit)


@_pickled_by_fields
@_built_fast
@dataclass(frozen=True, slots=True)
class BalanceRecord:
    """A balance as stored."""

    balance_id: str
    ledger_id: str
    identity_id: str | None
    indicator: str | None
    currency: str
    figures: Figures
    version: int
    track_fund_lineage: bool
    allocation_strategy: str
    meta_data: dict[str, Any]
    created_at: datetime
    inflight_expires_at: datetime | None


@_pickled_by_fields
@_built_fast
@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a split: a balance and its share."""

    identifier: str
    distribution: str | None = None
    precise_distribution: int | None = None
    narration: str | None = None
    transaction_id: str | None = None


@_pickled_by_fields
@_built_fast
@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """A transaction as stored (and as Blnk serialises it)."""

    transaction_id: str
    parent_transaction: str
    source: str
    destination: str
    reference: str
    precise_amount: int
    precision: int
    currency: str
    description: str
    status: TransactionStatus
    hash: str
    allow_overdraft: bool
    overdraft_limit: Decimal
    inflight: bool
    skip_queue: bool
    atomic: bool
    sources: tuple[Leg, ...] | None
    destinations: tuple[Leg, ...] | None
    committed_amount: int
    voided_amount: int
    outcome: dict[str, Any] | None
    created_at: datetime
    effective_date: datetime | None
    scheduled_for: datetime | None
    inflight_expiry_date: datetime | None
    inflight_commit_date: datetime | None
    meta_data: dict[str, Any]
    effect: Effect = Effect.NONE

    @property
    def hold_remaining(self) -> int:
        """What an inflight hold has left to commit or void."""
        return self.precise_amount - self.committed_amount - self.voided_amount


# ---------------------------------------------------------------- commands


@_pickled_by_fields
@_built_fast
@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An Idempotency-Key header and the hash of the request it came with."""

    key: str
    request_hash: str


@_pickled_by_fields
@_built_fast
@dataclass(frozen=True, slots=True)
class PostTransaction:
    """Create a transaction (one or many legs); ids and amounts already validated."""

    transaction_id: str
    reference: str
    precise_amount: int
    precision: int
    currency: str
    description: str
    source: str | None
    destination: str | None
    sources: tuple[Leg, ...] | None = None
    destinations: tuple[Leg, ...] | None = None
    allow_overdraft: bool = False
    overdraft_limit: Decimal = Decimal(0)
    inflight: bool = False
    skip_queue: bool = False
    atomic: bool = False
    created_at: datetime | None = None
    effective_date: datetime | None = None
    scheduled_for: datetime | None = None
    inflight_expiry_date: datetime | None = None
    inflight_commit_date: datetime | None = None
    meta_data: dict[str, Any] = field(default_factory=dict)
    idempotency: IdempotencyClaim | None = None
    parent_transaction: str = ""  # a bulk item's batch id

    @property
    def overdraft_floor(self) -> int | None:
        """The lowest available balance allowed, in minor units; None means no check at all.

        Blnk: `allow_overdraft` without a limit skips the check; a positive limit is honoured
        with or without `allow_overdraft`. The limit is in major units; its floor is exact
        (truncated toward zero), whatever its digits: a product in the default 28-digit decimal
        context would round a larger one.
        """
        if self.overdraft_limit > 0:
            return -math.trunc(Fraction(self.overdraft_limit) * self.precision)
        if self.allow_overdraft:
            return None
        return 0


@_pickled_by_fields
@_built_fast
@dataclass(frozen=True, slots=True)
class CommitInflight:
    """Commit all or part of a hold (PUT /transactions/inflight/{id} status=commit)."""

    target_id: str
    child_id: str
    child_reference: str
    precise_amount: int | None = None
    amount: Decimal | None = None  # major units, converted with the hold's own precision
    skip_queue: bool = True
    created_at: datetime | None = None


@_pickled_by_fields
@_built_fast
@dataclass(frozen=True, slots=True)
class VoidInflight:
    """Release what a hold has left (status=void)."""

    target_id: str
    child_id: str
    child_reference: str
    skip_queue: bool = True
    created_at: datetime | None = None


@_pickled_by_fields
@_built_fast
@dataclass(frozen=True, slots=True)
class RefundTransaction:
    """Post the reverse of an applied transaction."""

    original_id: str
    refund_id: str
    skip_queue: bool = False
    description: str | None = None
    meta_data: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


# A stored run_async bulk is left to the replica that accepted it for this long; after that
# the scheduler runs it too (running it twice is harmless: the second run finds it done).
ASYNC_BULK_LEASE_S: Final = 60
ASYNC_BULK_ATTEMPTS_MAX: Final = 5  # scheduler runs of one request before it is abandoned


@_pickled_by_fields
@_built_fast
@dataclass(frozen=True, slots=True)
class PostBulk:
    """Many transactions in one request; atomic means all or none.

    `is_durable`: the request is stored in `ledger.async_bulks` (`run_async`); the batch that
    runs it marks it done, and a request already done is not run again. `abandon_reason`: run
    nothing, report the bulk failed with this reason and mark it done (it could not be run).
    """

    batch_id: str
    items: tuple[PostTransaction, ...]
    atomic: bool
    inflight: bool
    is_durable: bool = False
    abandon_reason: str | None = None


@_pickled_by_fields
@_built_fast
@dataclass(frozen=True, slots=True)
class RunScheduled:
    """Execute a SCHEDULED transaction whose time has come."""

    transaction_id: str
    child_id: str


Command = (
    PostTransaction | CommitInflight | VoidInflight | RefundTransaction | PostBulk | RunScheduled
)


@_pickled_by_fields
@_built_fast
@dataclass(frozen=True, slots=True)
class Outcome:
    """The engine's answer to one command: a transaction (with extra members), a body, or an
    error. Transactions travel as records and are serialised by the ingress."""

    status_code: int = 200
    record: TransactionRecord | None = None
    extra: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    error: AppError | None = None
