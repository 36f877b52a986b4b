"""Multi-currency transfers: exchange rates and the two-leg posting through FX balances.

**Rates.** `ledger.exchange_rates` holds the latest rate per pair. Providers fill it behind one
protocol, `RateProvider`: `StaticFileProvider` reads `ledger/data/rates.yaml` (the default; its
pairs only fill gaps, never replacing a fresher rate), `FrankfurterProvider` reads the
Frankfurter API (European Central Bank reference rates; `GET /latest?from=USD` answers
`{"base": "USD", "date": "...", "rates": {"EUR": 0.92, ...}}`), and operators can set a pair
through the API. A pair with no direct rate uses the inverse of the opposite pair.

**Transfers.** Blnk removed its `rate` field (v0.15.0) in favour of "two transactions through
`@` FX balances". `fx_bulk` builds exactly that, as one atomic `PostBulk`: the source pays
`@FX_<SRC>` in the source currency, and `@FX_<DST>` pays the destination in the destination
currency. Each leg is an ordinary same-currency transaction, so every currency still sums to
zero; the FX indicator balances carry the house's position in each currency. Both legs record
the rate, the pair, the rate's source and both amounts in `meta_data`.

**Rounding.** `destination = source_units x rate x dst_precision / src_precision`, computed on
exact ratios of integers, then truncated toward zero: the destination never receives more than
the rate buys, and the fraction of a minor unit stays with the house (it is not posted
anywhere, since each leg balances on its own). A rate derived from the opposite pair divides by
that pair's rate exactly (its 18-digit inverse is for display only: multiplying by a rounded
inverse would credit a minor unit less, or more, than the stored rate buys). A transfer that
would credit nothing is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, Protocol

import asyncpg
import httpx
import yaml

from kit.clock import Clock
from kit.db import Database
from kit.errors import DependencyError, DomainError, NotFoundError, ProviderUnavailableError
from kit.money import MINOR_UNITS_DIGITS_MAX, format_amount, parse_decimal
from kit.money import InvalidAmountError as MoneyInvalidAmountError
from ledger import fx_repository
from ledger.errors import TransactionValidationError
from ledger.fx_model import Rate
from ledger.models import CURRENCY_CODE, PostBulk, PostTransaction

FX_INDICATOR_PREFIX: Final = "@FX_"
RATES_FILE: Final = Path(__file__).resolve().parent / "data" / "rates.yaml"
RATES_FILE_BYTES_MAX: Final = 1 << 20  # a rates file is a table of pairs, not a data dump
RATES_LIST_MAX: Final = 1_000
RATE_DIGITS_MAX: Final = 30  # significant digits of a rate (ample for any market quote)
INVERSE_RATE_DIGITS: Final = 18  # significant digits kept when inverting a stored rate
PROVIDER_TIMEOUT_S: Final = 5.0
PROVIDER_RATES_MAX: Final = 1_000  # quotes one provider answer may carry
FRANKFURTER_URL: Final = "https://api.frankfurter.app"
REFRESH_BASES_MAX: Final = 32  # base currencies one refresh asks the provider for
LEG_OUT_SUFFIX: Final = ""  # the debit leg keeps the client's reference
LEG_IN_SUFFIX: Final = "_fx"
logger = logging.getLogger(__name__)
_EXACT = decimal.Context(
    prec=200, traps=[decimal.InvalidOperation, decimal.Overflow, decimal.DivisionByZero]
)


class FxRateNotFoundError(NotFoundError):
    """No rate is known for the pair (neither direct nor inverse)."""

    code = "FX_RATE_NOT_FOUND"
    default_message = "no exchange rate is known for this currency pair"


class FxValidationError(DomainError):
    """A multi-currency request breaks a rule."""

    code = "FX_VALIDATION_ERROR"
    status = 400


class RateProvider(Protocol):
    """Where rates come from."""

    name: str

    async def fetch_rates(self, base: str) -> Mapping[str, Decimal]:
        """Quotes for one unit of `base`: {quote currency: rate}."""
        ...


def parse_rate(value: Any) -> Decimal:
    """A positive, finite rate from a client, a file or a provider (never through a float)."""
    try:
        rate = parse_decimal(value if not isinstance(value, float) else repr(value))
    except MoneyInvalidAmountError as exc:
        raise FxValidationError("rate must be a number", rate=str(value)[:64]) from exc
    if rate <= 0:
        raise FxValidationError("rate must be greater than zero", rate=str(value)[:64])
    if (
        len(rate.normalize(_EXACT).as_tuple().digits) > RATE_DIGITS_MAX
        or abs(rate.adjusted()) > RATE_DIGITS_MAX
    ):
        raise FxValidationError(f"rate has more than {RATE_DIGITS_MAX} significant digits")
    return rate


def invert(rate: Decimal) -> Decimal:
    """1 / rate, to `INVERSE_RATE_DIGITS` significant digits (half even)."""
    context = decimal.Context(prec=INVERSE_RATE_DIGITS, rounding=decimal.ROUND_HALF_EVEN)
    return context.divide(Decimal(1), rate)


def convert(
    units: int, *, rate: Decimal | Fraction, source_precision: int, destination_precision: int
) -> int:
    """Destination minor units for `units` source minor units, truncated toward zero."""
    exact = Fraction(rate)
    return (units * destination_precision * exact.numerator) // (
        source_precision * exact.denominator
    )


def fx_indicator(currency: str) -> str:
    """The FX indicator balance of a currency (`@FX_USD`)."""
    return f"{FX_INDICATOR_PREFIX}{currency}"


# ---------------------------------------------------------------- providers


class StaticFileProvider:
    """Rates from a YAML (or JSON) file of pairs shipped with the code."""

    name = "static"

    def __init__(self, path: Path = RATES_FILE) -> None:
        self.path = path

    def load(self) -> list[Rate]:
        """Every pair in the file (blocking file read: call at startup or from a thread)."""
        raw = self.path.read_bytes()
        if len(raw) > RATES_FILE_BYTES_MAX:
            raise FxValidationError("the rates file is too large", path=str(self.path))
        document = yaml.safe_load(raw)
        if not isinstance(document, dict) or not isinstance(document.get("pairs"), list):
            raise FxValidationError("the rates file needs a list of pairs", path=str(self.path))
        as_of = _as_of(document.get("as_of"))
        source = str(document.get("source") or self.name)[:64]
        rates = []
        for item in document["pairs"]:
            if not isinstance(item, dict) or isinstance(item.get("rate"), float):
                raise FxValidationError(
                    "each pair is {base, quote, rate} with the rate as a string"
                )
            rates.append(
                Rate(str(item["base"]), str(item["quote"]), parse_rate(item["rate"]), source, as_of)
            )
        return rates

    async def fetch_rates(self, base: str) -> Mapping[str, Decimal]:
        """Quotes of `base` found in the file."""
        return {rate.quote: rate.rate for rate in self.load() if rate.base == base}


def _as_of(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise FxValidationError("the rates file needs an as_of time")


class FrankfurterProvider:
    """The Frankfurter API (ECB reference rates): `GET {base_url}/latest?from=USD`."""

    name = "frankfurter"

    def __init__(self, http: httpx.AsyncClient, *, base_url: str = FRANKFURTER_URL) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    async def fetch_rates(self, base: str) -> Mapping[str, Decimal]:
        """Quotes for one unit of `base`.

        Raises:
            ProviderUnavailableError: the provider did not answer, or not with rates.
        """
        try:
            response = await self.http.get(
                f"{self.base_url}/latest", params={"from": base}, timeout=PROVIDER_TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailableError(
                f"the rates provider did not answer: {type(exc).__name__}"
            ) from exc
        if response.status_code != 200:
            raise ProviderUnavailableError(f"the rates provider answered {response.status_code}")
        try:
            return _quotes(json.loads(response.text, parse_float=Decimal, parse_int=Decimal), base)
        except (ValueError, KeyError, TypeError, FxValidationError) as exc:
            raise ProviderUnavailableError(
                "the rates provider answered something else than rates"
            ) from exc


def _quotes(document: Any, base: str) -> dict[str, Decimal]:
    """The quotes of a Frankfurter answer for `base`; raises ValueError on anything else."""
    if not isinstance(document, dict) or document.get("base") != base:
        raise ValueError("not a rates document for this base")
    quotes = document.get("rates")
    if not isinstance(quotes, dict) or len(quotes) > PROVIDER_RATES_MAX:
        raise ValueError("the rates are missing or too many")
    return {str(quote): parse_rate(rate) for quote, rate in quotes.items()}


# ---------------------------------------------------------------- the rates table


async def store_rates(
    conn: asyncpg.Connection, rates: Sequence[Rate], *, replace_existing: bool
) -> int:
    """Write rates (skipping same-currency pairs, and pairs whose codes no ledger table could
    hold: a provider's odd entry must not fail the whole refresh); returns how many rows
    changed."""
    usable = [
        r
        for r in rates
        if r.base != r.quote and CURRENCY_CODE.match(r.base) and CURRENCY_CODE.match(r.quote)
    ]
    if len(usable) < len(rates):
        logger.warning("skipped %d rates of unusable pairs", len(rates) - len(usable))
    return await fx_repository.upsert_rates(conn, usable, replace=replace_existing)


async def load_static_rates(
    conn: asyncpg.Connection, provider: StaticFileProvider | None = None
) -> int:
    """Fill pairs that have no rate yet from the static file."""
    return await store_rates(
        conn, (provider or StaticFileProvider()).load(), replace_existing=False
    )


async def refresh_rates(
    conn: asyncpg.Connection, provider: RateProvider, bases: Iterable[str], *, now: datetime
) -> int:
    """Fetch quotes of each base from an HTTP provider and replace the stored rates."""
    rates: list[Rate] = []
    for base in bases:
        quotes = await provider.fetch_rates(base)
        rates.extend(Rate(base, quote, rate, provider.name, now) for quote, rate in quotes.items())
    return await store_rates(conn, rates, replace_existing=True)


class RateRefresher:
    """Keeps the rates table fresh from an HTTP provider: every `interval_s`, the quotes of each
    base currency replace the stored ones. A refresh that fails (the provider down, an answer
    that is not rates) changes nothing and is logged; the next interval tries again, so a stale
    rate stays usable (its `as_of` says how old it is) rather than none at all."""

    def __init__(
        self,
        db: Database,
        provider: RateProvider,
        *,
        bases: Sequence[str],
        interval_s: float,
        clock: Clock,
    ) -> None:
        if not bases or len(bases) > REFRESH_BASES_MAX:
            raise FxValidationError(f"a refresh needs 1-{REFRESH_BASES_MAX} base currencies")
        self.db = db
        self.provider = provider
        self.bases = tuple(bases)
        self.interval_s = interval_s
        self.clock = clock
        self.refreshes = 0
        self.failures = 0

    async def refresh_once(self) -> int:
        """Fetch and store every base's quotes now; the rows changed (0 when it failed)."""
        try:
            async with self.db.transaction() as conn:
                changed = await refresh_rates(conn, self.provider, self.bases, now=self.clock.now())
        except DependencyError as exc:  # the provider or the database: the next interval retries
            self.failures += 1
            logger.warning("exchange rates not refreshed", extra={"reason": exc.message})
            return 0
        self.refreshes += 1
        return changed

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh now, then every `interval_s`, until `stop` is set."""
        while not stop.is_set():
            await self.refresh_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)


async def find_rate(conn: asyncpg.Connection, base: str, quote: str) -> Rate:
    """The rate for a pair: direct, or the inverse of the opposite pair."""
    if base == quote:
        raise FxValidationError("the currencies of a conversion must differ")
    direct, inverse = await fx_repository.find_pair(conn, base, quote)
    if direct is not None:
        return direct
    if inverse is not None:
        return Rate(
            base,
            quote,
            invert(inverse.rate),
            f"inverse:{inverse.source}"[:64],
            inverse.as_of,
            inverse_of=inverse.rate,
        )
    raise FxRateNotFoundError(base=base, quote=quote)


def rate_json(rate: Rate) -> dict[str, Any]:
    """A rate as the API returns it (the rate as exact decimal text)."""
    return {
        "base_currency": rate.base,
        "quote_currency": rate.quote,
        "rate": format(rate.rate, "f"),
        "source": rate.source,
        "as_of": rate.as_of.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


# ---------------------------------------------------------------- the transfer


def fx_bulk(
    source_leg: PostTransaction,
    *,
    destination: str,
    destination_currency: str,
    destination_precision: int,
    rate: Rate,
    batch_id: str,
    destination_transaction_id: str,
) -> PostBulk:
    """The atomic two-leg posting of a conversion.

    `source_leg` is the validated request as if it were a plain transfer in the source
    currency; its destination is replaced by the source currency's FX balance.
    """
    if source_leg.sources or source_leg.destinations or not source_leg.source:
        raise FxValidationError("a multi-currency transfer has one source and one destination")
    if source_leg.currency == destination_currency:
        raise FxValidationError("destination_currency must differ from currency")
    if source_leg.inflight or source_leg.scheduled_for is not None:
        raise FxValidationError(
            "a multi-currency transfer is immediate: no inflight, no scheduled_for"
        )
    credited = convert(
        source_leg.precise_amount,
        rate=rate.exact(),
        source_precision=source_leg.precision,
        destination_precision=destination_precision,
    )
    if credited <= 0:
        raise TransactionValidationError("the converted amount is less than one minor unit")
    if len(str(credited)) > MINOR_UNITS_DIGITS_MAX:  # the bound every posted amount keeps
        raise TransactionValidationError(
            f"the converted amount has more than {MINOR_UNITS_DIGITS_MAX} digits"
        )
    meta = {
        **source_leg.meta_data,
        "fx_rate": format(rate.rate, "f"),
        "fx_pair": f"{source_leg.currency}/{destination_currency}",
        "fx_rate_source": rate.source,
        "fx_batch_id": batch_id,
        "fx_source_amount": format_amount(source_leg.precise_amount, source_leg.precision),
        "fx_source_currency": source_leg.currency,
        "fx_destination_amount": format_amount(credited, destination_precision),
        "fx_destination_currency": destination_currency,
    }
    if rate.inverse_of is not None:  # what the amount was divided by, to recompute it exactly
        meta["fx_rate_inverse_of"] = format(rate.inverse_of, "f")
    debit = replace(
        source_leg,
        reference=source_leg.reference + LEG_OUT_SUFFIX,
        destination=fx_indicator(source_leg.currency),
        skip_queue=True,
        idempotency=None,
        meta_data=meta,
    )
    credit = PostTransaction(
        transaction_id=destination_transaction_id,
        reference=source_leg.reference + LEG_IN_SUFFIX,
        precise_amount=credited,
        precision=destination_precision,
        currency=destination_currency,
        description=source_leg.description,
        source=fx_indicator(destination_currency),
        destination=destination,
        allow_overdraft=True,  # the FX balance carries the house's position; it may go negative
        skip_queue=True,
        created_at=source_leg.created_at,
        effective_date=source_leg.effective_date,
        meta_data=meta,
    )
    return PostBulk(batch_id=batch_id, items=(debit, credit), atomic=True, inflight=False)
