"""Multi-currency transfers and exchange rates (our extension; Blnk removed `rate` in 0.15.0).

- POST `/transactions/fx`: Blnk's transaction body (one `source`, one `destination`, `amount`
  or `precise_amount`, `precision`, `currency`, `reference`, `description`, `meta_data`,
  `allow_overdraft`, `overdraft_limit`, `effective_date`, `dry_run`) plus
  `destination_currency` (required), `rate` (optional: one unit of `currency` buys `rate`
  units of `destination_currency`; without it the stored rate is used) and
  `destination_precision` (optional; defaults to `precision`). Posts two same-currency legs
  atomically: source -> `@FX_<currency>` (reference `R`) and `@FX_<destination_currency>` ->
  destination (reference `R_fx`). Answers 201 `{batch_id, status, transaction_count, rate,
  rate_source, source_amount, destination_amount, transactions: [debit leg, credit leg]}`; a
  refusal answers Blnk's bulk error body (`{error, batch_id, error_detail}`) with its status.
- GET `/fx/rates`: every stored rate. GET `/fx/rates/{base}/{quote}`: the rate a transfer
  would use (direct, or the inverse of the opposite pair); 404 FX_RATE_NOT_FOUND.
- PUT `/fx/rates/{base}/{quote}` `{rate}`: set a pair by hand (source `manual`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from kit.ids import IdPrefix, new_id
from kit.money import InvalidAmountError as MoneyInvalidAmountError
from kit.money import InvalidPrecisionError, format_amount, parse_precision
from ledger import fx, fx_repository, repository
from ledger.endpoints.common import LedgerDeps, json_body, json_response, read_json
from ledger.errors import (
    DuplicateReferenceError,
    InsufficientFundsError,
    PrecisionNotIntegerError,
    TransactionValidationError,
)
from ledger.fx import FxRateNotFoundError, FxValidationError, StaticFileProvider, rate_json
from ledger.fx_model import Rate
from ledger.models import CURRENCY_CODE, PostBulk
from ledger.preview import preview_bulk
from ledger.schemas import NumberOrText, TransactionIn, transaction_command, validate_body
from ledger.wire import transaction_json

CURRENCY_LENGTH_MAX: Final = 32
_CODE_RULE: Final = "1-32 letters, digits, _ . : -"


class FxTransactionIn(TransactionIn):
    """POST /transactions/fx: a transaction body plus the destination currency and rate."""

    destination_currency: str = Field(default="", max_length=CURRENCY_LENGTH_MAX)
    rate: NumberOrText | None = None
    destination_precision: NumberOrText | None = None


class RateIn(BaseModel):
    """PUT /fx/rates/{base}/{quote}."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    rate: NumberOrText | None = None


def fx_router(deps: LedgerDeps, rates_provider: StaticFileProvider | None = None) -> APIRouter:
    """Multi-currency routes; the static file fills missing pairs on first use."""
    router = APIRouter(tags=["fx"])
    static = rates_provider or StaticFileProvider()
    loaded = asyncio.Event()
    errors: dict[int | str, dict[str, Any]] = {
        400: {"description": f"{FxValidationError.code}, {InsufficientFundsError.code}"},
        404: {"description": FxRateNotFoundError.code},
        409: {"description": DuplicateReferenceError.code},
    }

    async def ensure_static_rates() -> None:
        if loaded.is_set():
            return
        rates = await asyncio.to_thread(static.load)
        async with deps.db.transaction() as conn:
            await fx.store_rates(conn, rates, replace_existing=False)
        loaded.set()

    async def rate_for(body: FxTransactionIn, currency: str, destination_currency: str) -> Rate:
        if body.rate is not None:
            return Rate(
                currency,
                destination_currency,
                fx.parse_rate(body.rate),
                "explicit",
                deps.clock.now(),
            )
        await ensure_static_rates()
        async with deps.db.connection() as conn:
            return await fx.find_rate(conn, currency, destination_currency)

    @router.post(
        "/transactions/fx",
        status_code=201,
        responses=errors,
        summary="Transfer across currencies",
        openapi_extra=json_body(FxTransactionIn),
    )
    async def transfer(request: Request) -> Response:
        body = validate_body(FxTransactionIn, await read_json(request))
        if not body.destination_currency:
            raise FxValidationError("destination_currency is required")
        if not body.destination:
            raise TransactionValidationError("destination is required")
        source_leg = transaction_command(body, now=deps.clock.now())
        if not CURRENCY_CODE.match(body.destination_currency):  # the source's: transaction_command
            raise FxValidationError(f"destination_currency is a code ({_CODE_RULE})")
        rate = await rate_for(body, source_leg.currency, body.destination_currency)
        destination_precision = _destination_precision(body, source_leg.precision)
        command = fx.fx_bulk(
            source_leg,
            destination=body.destination,
            destination_currency=body.destination_currency,
            destination_precision=destination_precision,
            rate=rate,
            batch_id=new_id(IdPrefix.BULK),
            destination_transaction_id=new_id(IdPrefix.TRANSACTION),
        )
        if body.dry_run:
            async with deps.db.connection() as conn:
                return json_response(await preview_bulk(conn, command, now=deps.clock.now()))
        (outcome,) = await deps.port.execute([command])
        if outcome.error is not None:
            raise outcome.error
        if outcome.status_code >= 300:
            return json_response(outcome.body, outcome.status_code)
        return json_response(await _answer(deps, command, rate, outcome.body or {}), 201)

    @router.get("/fx/rates", responses=errors, summary="Stored exchange rates")
    async def rates() -> Response:
        await ensure_static_rates()
        async with deps.db.connection() as conn:
            found = await fx_repository.list_rates(conn, limit=fx.RATES_LIST_MAX)
        return json_response([rate_json(r) for r in found])

    @router.get("/fx/rates/{base}/{quote}", responses=errors, summary="The rate of a pair")
    async def pair(base: str, quote: str) -> Response:
        await ensure_static_rates()
        async with deps.db.connection() as conn:
            return json_response(rate_json(await fx.find_rate(conn, base, quote)))

    @router.put(
        "/fx/rates/{base}/{quote}",
        responses=errors,
        summary="Set the rate of a pair",
        openapi_extra=json_body(RateIn),
    )
    async def set_pair(base: str, quote: str, request: Request) -> Response:
        body = validate_body(RateIn, await read_json(request))
        if not CURRENCY_CODE.match(base) or not CURRENCY_CODE.match(quote) or base == quote:
            raise FxValidationError(
                f"base and quote are two different currency codes ({_CODE_RULE})"
            )
        rate = Rate(base, quote, fx.parse_rate(body.rate), "manual", deps.clock.now())
        async with deps.db.transaction() as conn:
            await fx.store_rates(conn, [rate], replace_existing=True)
        return json_response(rate_json(rate))

    return router


async def _answer(
    deps: LedgerDeps, command: PostBulk, rate: Rate, body: dict[str, Any]
) -> dict[str, Any]:
    """The transfer's answer: the batch, the rate, both amounts and both legs as stored."""
    debit, credit = command.items
    legs: list[dict[str, Any]] = []
    async with deps.db.connection() as conn:
        for leg in command.items:
            stored = await repository.find_transaction_by_reference(conn, leg.reference)
            legs.append(
                transaction_json(stored)
                if stored is not None
                else {
                    "reference": leg.reference,
                    "currency": leg.currency,
                    "precise_amount": leg.precise_amount,
                }
            )
    return {
        **body,
        "rate": format(rate.rate, "f"),
        "rate_source": rate.source,
        "source_amount": _amount(debit.precise_amount, debit.precision, debit.currency),
        "destination_amount": _amount(credit.precise_amount, credit.precision, credit.currency),
        "transactions": legs,
    }


def _destination_precision(body: FxTransactionIn, default: int) -> int:
    if body.destination_precision is None:
        return default
    try:
        return parse_precision(body.destination_precision)
    except (InvalidPrecisionError, MoneyInvalidAmountError) as exc:
        raise PrecisionNotIntegerError("destination_precision must be a whole number") from exc


def _amount(units: int, precision: int, currency: str) -> dict[str, Any]:
    return {
        "precise_amount": units,
        "precision": precision,
        "amount": format_amount(units, precision),
        "currency": currency,
    }
