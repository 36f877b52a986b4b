"""Multi-currency transfers: rates, exact conversion, and two legs that keep every currency at zero.

Goal: prove that a conversion is computed on integers and decimals only (truncated, never
crediting more than the rate buys), that the transfer posts two same-currency legs atomically
through the FX indicator balances with the rate recorded on both, that a refused transfer
changes nothing, and that rates come from the shipped file, an operator, or an HTTP provider.
Method: property tests on the pure conversion and leg building; the API over real HTTP
(`POST /transactions/fx`) on the test database with SQL checks of the per-currency sums; the
Frankfurter adapter against an `httpx.MockTransport` standing in for the third party.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.clock import FrozenClock
from kit.db import Database
from kit.errors import ProviderUnavailableError
from ledger.errors import TransactionValidationError
from ledger.fx import (
    REFRESH_BASES_MAX,
    FrankfurterProvider,
    FxValidationError,
    RateRefresher,
    StaticFileProvider,
    convert,
    find_rate,
    fx_bulk,
    fx_indicator,
    invert,
    parse_rate,
)
from ledger.fx_model import Rate
from tests.ledger.conftest import transfer

pytestmark = pytest.mark.db

NOW = datetime(2026, 11, 30, tzinfo=UTC)
RATES = st.decimals(
    min_value=Decimal("0.000001"), max_value=Decimal("100000"), places=6, allow_nan=False
)
PRECISIONS = st.sampled_from([1, 100, 1_000, 10**8, 10**18])


class TestConversion:
    @settings(max_examples=200, deadline=None)
    @given(
        units=st.integers(min_value=1, max_value=10**20), rate=RATES, src=PRECISIONS, dst=PRECISIONS
    )
    def test_conversion_is_exact_truncation(
        self, units: int, rate: Decimal, src: int, dst: int
    ) -> None:
        """The credit is floor(units x rate x dst / src), computed exactly."""
        exact = Fraction(units) * Fraction(rate) * dst / src
        assert convert(units, rate=rate, source_precision=src, destination_precision=dst) == int(
            exact
        )

    @settings(max_examples=200, deadline=None)
    @given(units=st.integers(min_value=1, max_value=10**15), rate=RATES, dst=PRECISIONS)
    def test_legs_balance_per_currency(self, units: int, rate: Decimal, dst: int) -> None:
        """Both legs are same-currency moves: every currency nets to zero."""
        source_leg = transfer("bln_src", "bln_dst", units, currency="USD")
        credited = convert(units, rate=rate, source_precision=100, destination_precision=dst)
        if credited <= 0:
            with pytest.raises(TransactionValidationError, match="less than one minor unit"):
                fx_bulk(
                    source_leg,
                    destination="bln_dst",
                    destination_currency="EUR",
                    destination_precision=dst,
                    rate=Rate("USD", "EUR", rate, "test", NOW),
                    batch_id="bulk_x",
                    destination_transaction_id="txn_y",
                )
            return
        bulk = fx_bulk(
            source_leg,
            destination="bln_dst",
            destination_currency="EUR",
            destination_precision=dst,
            rate=Rate("USD", "EUR", rate, "test", NOW),
            batch_id="bulk_x",
            destination_transaction_id="txn_y",
        )
        sums: dict[str, int] = {}
        for leg in bulk.items:
            assert leg.source is not None
            assert leg.destination is not None
            sums[leg.currency + leg.source] = (
                sums.get(leg.currency + leg.source, 0) - leg.precise_amount
            )
            sums[leg.currency + leg.destination] = (
                sums.get(leg.currency + leg.destination, 0) + leg.precise_amount
            )
        by_currency: dict[str, int] = {}
        for key, value in sums.items():
            by_currency[key[:3]] = by_currency.get(key[:3], 0) + value
        assert by_currency == {"USD": 0, "EUR": 0}
        debit, credit = bulk.items
        assert (debit.source, debit.destination, debit.precise_amount) == (
            "bln_src",
            fx_indicator("USD"),
            units,
        )
        assert (credit.source, credit.destination, credit.precise_amount) == (
            fx_indicator("EUR"),
            "bln_dst",
            credited,
        )
        assert bulk.atomic
        assert debit.meta_data["fx_rate"] == credit.meta_data["fx_rate"] == format(rate, "f")

    def test_rates_never_pass_through_floats(self) -> None:
        """Rates parse from text exactly; zero, negatives and junk are refused."""
        assert parse_rate("0.123456789012345678") == Decimal("0.123456789012345678")
        for bad in ("0", "-1", "abc"):
            with pytest.raises(FxValidationError):
                parse_rate(bad)

    def test_inverse_keeps_eighteen_significant_digits(self) -> None:
        """1 / 0.92 to 18 significant digits."""
        assert invert(Decimal("0.92")) == Decimal("1.08695652173913043")


class TestProviders:
    def test_static_file_ships_usable_pairs(self) -> None:
        """The shipped rates file loads as exact decimals."""
        rates = StaticFileProvider().load()
        pairs = {(r.base, r.quote): r.rate for r in rates}
        assert pairs[("USD", "EUR")] == Decimal("0.9200")
        assert all(r.source == "static" for r in rates)

    async def test_frankfurter_answer_is_read_exactly(self) -> None:
        """The Frankfurter shape becomes exact quotes (no float round trip)."""

        def answer(request: httpx.Request) -> httpx.Response:
            assert request.url.path == "/latest"
            assert request.url.params["from"] == "USD"
            return httpx.Response(
                200,
                text='{"amount":1.0,"base":"USD","date":"2026-11-27","rates":{"EUR":0.91234567,"GBP":0.79}}',
            )

        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
            quotes = await FrankfurterProvider(http, base_url="https://rates.test").fetch_rates(
                "USD"
            )
        assert quotes == {"EUR": Decimal("0.91234567"), "GBP": Decimal("0.79")}

    @pytest.mark.parametrize(
        "response",
        [
            httpx.Response(503),
            httpx.Response(200, text="{not json"),
            httpx.Response(200, json={"base": "EUR", "rates": {}}),
        ],
    )
    async def test_frankfurter_failures_are_provider_unavailable(
        self, response: httpx.Response
    ) -> None:
        """A 5xx, a malformed body or another base is a ProviderUnavailableError."""
        async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: response)) as http:
            with pytest.raises(ProviderUnavailableError):
                await FrankfurterProvider(http, base_url="https://rates.test").fetch_rates("USD")


async def _sums(db: Database, *currencies: str) -> dict[str, int]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT currency, sum(balance) AS total FROM ledger.balances WHERE currency = ANY($1) GROUP BY 1",
            list(currencies),
        )
    return {row["currency"]: int(row["total"]) for row in rows}


async def _balance(api: httpx.AsyncClient, currency: str) -> str:
    ledger = (await api.post("/ledgers", json={"name": "fx"})).json()["ledger_id"]
    balance_id: str = (
        await api.post("/balances", json={"ledger_id": ledger, "currency": currency})
    ).json()["balance_id"]
    return balance_id


async def _fund(api: httpx.AsyncClient, balance_id: str, units: int, currency: str) -> None:
    response = await api.post(
        "/transactions",
        json={
            "precise_amount": units,
            "precision": 100,
            "reference": f"fund-{uuid.uuid4()}",
            "currency": currency,
            "source": f"@World{currency}",
            "destination": balance_id,
            "allow_overdraft": True,
            "skip_queue": True,
            "description": "fund",
        },
    )
    assert response.status_code == 201, response.text


async def _amount(api: httpx.AsyncClient, balance_id: str) -> int:
    amount: int = (await api.get(f"/balances/{balance_id}")).json()["balance"]
    return amount


def _fx_body(source: str, destination: str, units: int, **extra: Any) -> dict[str, Any]:
    body = {
        "precise_amount": units,
        "precision": 100,
        "reference": f"fx-{uuid.uuid4()}",
        "currency": "USD",
        "destination_currency": "EUR",
        "source": source,
        "destination": destination,
        "description": "convert",
    }
    body.update(extra)
    return body


class TestTransferApi:
    @pytest.fixture
    async def api(self, ledger_url: str) -> Any:
        """An HTTP client on the ledger app."""
        async with httpx.AsyncClient(base_url=ledger_url, timeout=10) as client:
            yield client

    async def test_explicit_rate_posts_two_legs(self, api: httpx.AsyncClient, db: Database) -> None:
        """10.00 USD at 0.9137 credits 9.13 EUR; both legs carry the rate; sums stay zero."""
        source, destination = await _balance(api, "USD"), await _balance(api, "EUR")
        await _fund(api, source, 5_000, "USD")
        body = _fx_body(source, destination, 1_000, rate="0.9137", meta_data={"order": "o-1"})
        response = await api.post("/transactions/fx", json=body)
        assert response.status_code == 201, response.text
        answer = response.json()
        assert answer["rate"] == "0.9137"
        assert answer["destination_amount"]["precise_amount"] == 913
        debit, credit = answer["transactions"]
        assert (debit["source"], debit["currency"], debit["precise_amount"]) == (
            source,
            "USD",
            1_000,
        )
        assert (credit["destination"], credit["currency"], credit["precise_amount"]) == (
            destination,
            "EUR",
            913,
        )
        for leg in (debit, credit):
            assert leg["meta_data"]["fx_rate"] == "0.9137"
            assert leg["meta_data"]["order"] == "o-1"
            assert leg["status"] == "APPLIED"
        assert (await api.get(f"/balances/{destination}")).json()["balance"] == 913
        assert (await api.get(f"/balances/{source}")).json()["balance"] == 4_000
        assert await _sums(db, "USD", "EUR") == {"USD": 0, "EUR": 0}

    async def test_stored_rate_is_used_without_one(self, api: httpx.AsyncClient) -> None:
        """Without `rate` the stored (operator-set) rate applies, and the inverse pair works."""
        assert (await api.put("/fx/rates/USD/EUR", json={"rate": "0.5"})).status_code == 200
        source, destination = await _balance(api, "USD"), await _balance(api, "EUR")
        await _fund(api, source, 1_000, "USD")
        response = await api.post("/transactions/fx", json=_fx_body(source, destination, 1_000))
        assert response.status_code == 201, response.text
        assert response.json()["rate_source"] == "manual"
        assert (await api.get(f"/balances/{destination}")).json()["balance"] == 500
        direct_from_file = (await api.get("/fx/rates/EUR/USD")).json()
        assert (direct_from_file["rate"], direct_from_file["source"]) == ("1.0870", "static")
        derived = (await api.get("/fx/rates/JPY/USD")).json()
        assert derived["source"] == "inverse:static"

    async def test_dry_run_previews_both_legs_and_writes_nothing(
        self, api: httpx.AsyncClient
    ) -> None:
        """dry_run answers the bulk preview of the two legs and posts nothing."""
        source, destination = await _balance(api, "USD"), await _balance(api, "EUR")
        await _fund(api, source, 1_000, "USD")
        body = _fx_body(source, destination, 400, rate="2", dry_run=True)
        response = await api.post("/transactions/fx", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["dry_run"] is True
        assert (await api.get(f"/transactions/reference/{body['reference']}")).status_code == 404
        assert await _amount(api, destination) == 0

    async def test_refusal_changes_nothing(self, api: httpx.AsyncClient, db: Database) -> None:
        """Insufficient funds refuses the whole transfer: neither leg exists, no balance moved."""
        source, destination = await _balance(api, "USD"), await _balance(api, "EUR")
        body = _fx_body(source, destination, 1_000, rate="0.9")
        response = await api.post("/transactions/fx", json=body)
        assert response.status_code == 400
        assert response.json()["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
        for reference in (body["reference"], body["reference"] + "_fx"):
            assert (await api.get(f"/transactions/reference/{reference}")).status_code == 404
        assert (await api.get(f"/balances/{destination}")).json()["balance"] == 0
        assert await _sums(db, "USD", "EUR") == {"USD": 0, "EUR": 0}

    async def test_duplicate_reference_is_409(self, api: httpx.AsyncClient) -> None:
        """Replaying a transfer's reference is Blnk's 409 TXN_DUPLICATE_REFERENCE."""
        source, destination = await _balance(api, "USD"), await _balance(api, "EUR")
        await _fund(api, source, 5_000, "USD")
        body = _fx_body(source, destination, 100, rate="1.1")
        assert (await api.post("/transactions/fx", json=body)).status_code == 201
        again = await api.post("/transactions/fx", json=body)
        assert again.status_code == 409
        assert again.json()["error_detail"]["code"] == "TXN_DUPLICATE_REFERENCE"

    async def test_unknown_pair_and_bad_requests(self, api: httpx.AsyncClient) -> None:
        """No rate for the pair is 404 FX_RATE_NOT_FOUND; same currency or inflight is 400."""
        source, destination = await _balance(api, "USD"), await _balance(api, "EUR")
        unknown = await api.post(
            "/transactions/fx", json=_fx_body(source, destination, 100, destination_currency="XAU")
        )
        assert unknown.status_code == 404
        assert unknown.json()["error_detail"]["code"] == "FX_RATE_NOT_FOUND"
        same = await api.post(
            "/transactions/fx",
            json=_fx_body(source, destination, 100, destination_currency="USD", rate=1),
        )
        assert same.status_code == 400
        held = await api.post(
            "/transactions/fx", json=_fx_body(source, destination, 100, rate=1, inflight=True)
        )
        assert held.status_code == 400
        assert held.json()["error_detail"]["code"] == "FX_VALIDATION_ERROR"

    @pytest.mark.parametrize(
        ("path", "body", "code"),
        [
            # A code no ledger table can hold (PostgreSQL's CHECK answered, a 500).
            ("/fx/rates/%C2%89c/EUR", {"rate": "1.1"}, "FX_VALIDATION_ERROR"),
            ("/fx/rates/US%20D/EUR", {"rate": "1.1"}, "FX_VALIDATION_ERROR"),
            ("/fx/rates/USD/EUR", {}, "FX_VALIDATION_ERROR"),  # no rate: Decimal's TypeError
            ("/fx/rates/USD/EUR", {"rate": {}}, "GEN_MALFORMED_REQUEST"),  # not NumberOrText
        ],
    )
    async def test_setting_a_bad_rate_is_400(
        self, *, api: httpx.AsyncClient, db: Database, path: str, body: dict[str, Any], code: str
    ) -> None:
        """A bad pair or rate is a 400 and no rate is written."""
        async with db.connection() as conn:
            before = await conn.fetchval("SELECT count(*) FROM ledger.exchange_rates")
        response = await api.put(path, json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == code
        async with db.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM ledger.exchange_rates") == before


_USED_CODES: set[str] = set()


def _currencies() -> tuple[str, str]:
    """A pair of codes no other test of the run uses (the rates table is shared, and a base
    another test also quoted would be refreshed with its pairs)."""
    codes: list[str] = []
    while len(codes) < 2:
        letters = uuid.uuid4().hex.upper().translate(str.maketrans("0123456789", "GHIJKLMNOP"))
        code = f"Q{letters[:2]}"
        if code not in _USED_CODES:
            _USED_CODES.add(code)
            codes.append(code)
    return codes[0], codes[1]


def _frankfurter(
    base: str,
    quote: str,
    answers: list[httpx.Response | str],
    on_request: Callable[[], object] = lambda: None,
) -> httpx.AsyncClient:
    """A client whose provider answers, in order, each rate text or response in `answers`."""

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.params["from"] == base
        on_request()
        current = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(current, httpx.Response):
            return current
        return httpx.Response(
            200, text=f'{{"base":"{base}","date":"2026-11-30","rates":{{"{quote}":{current}}}}}'
        )

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


class TestRateRefresh:
    async def test_a_refresh_replaces_the_stored_rate(self, db: Database) -> None:
        """The provider's quote becomes the pair's rate, with its source and time."""
        base, quote = _currencies()
        async with _frankfurter(base, quote, ["1.2345", "1.5"]) as http:
            refresher = RateRefresher(
                db,
                FrankfurterProvider(http, base_url="https://rates.test"),
                bases=[base],
                interval_s=60,
                clock=FrozenClock(NOW),
            )
            assert await refresher.refresh_once() == 1
            async with db.connection() as conn:
                first = await find_rate(conn, base, quote)
            assert await refresher.refresh_once() == 1
            async with db.connection() as conn:
                second = await find_rate(conn, base, quote)
        assert first == Rate(base, quote, Decimal("1.2345"), "frankfurter", NOW)
        assert second.rate == Decimal("1.5")
        assert refresher.refreshes == 2

    async def test_a_failed_refresh_keeps_the_last_rate(self, db: Database) -> None:
        """The provider down: nothing changes, the failure is counted, the old rate serves."""
        base, quote = _currencies()
        async with _frankfurter(base, quote, ["0.5", httpx.Response(503)]) as http:
            refresher = RateRefresher(
                db,
                FrankfurterProvider(http, base_url="https://rates.test"),
                bases=[base],
                interval_s=60,
                clock=FrozenClock(NOW),
            )
            await refresher.refresh_once()
            assert await refresher.refresh_once() == 0
        async with db.connection() as conn:
            kept = await find_rate(conn, base, quote)
        assert kept.rate == Decimal("0.5")
        assert (refresher.refreshes, refresher.failures) == (1, 1)

    async def test_run_refreshes_at_once_and_stops_when_told(self, db: Database) -> None:
        """The first refresh does not wait an interval; setting stop ends the loop promptly."""
        base, quote = _currencies()
        stop = asyncio.Event()
        async with _frankfurter(base, quote, ["2"], on_request=stop.set) as http:
            refresher = RateRefresher(
                db,
                FrankfurterProvider(http, base_url="https://rates.test"),
                bases=[base],
                interval_s=3600,  # a loop that waited an interval first would time out below
                clock=FrozenClock(NOW),
            )
            await asyncio.wait_for(refresher.run(stop), timeout=10)
        assert refresher.refreshes == 1  # the refresh under way when stop was set finished

    def test_bases_are_bounded(self, db: Database) -> None:
        """No base currency, or more than a refresh may ask for, is a configuration mistake."""
        provider = StaticFileProvider()
        for bases in ([], [f"C{i:02d}" for i in range(REFRESH_BASES_MAX + 1)]):
            with pytest.raises(FxValidationError):
                RateRefresher(db, provider, bases=bases, interval_s=60, clock=FrozenClock(NOW))
