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
from pathlib import Path
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
    load_static_rates,
    parse_rate,
    store_rates,
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

    @settings(max_examples=200, deadline=None)
    @given(units=st.integers(min_value=1, max_value=10**20), stored=RATES, dst=PRECISIONS)
    def test_an_inverse_rate_divides_exactly(self, units: int, stored: Decimal, dst: int) -> None:
        """A rate derived from the opposite pair credits floor(units / stored x dst / src),
        never what its rounded 18-digit display would give."""
        derived = Rate("EUR", "USD", invert(stored), "inverse:test", NOW, inverse_of=stored)
        exact = Fraction(units) / Fraction(stored) * dst / 100
        assert convert(
            units, rate=derived.exact(), source_precision=100, destination_precision=dst
        ) == int(exact)

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
            ("/fx/rates/USD/EUR", {"rate": True}, "GEN_MALFORMED_REQUEST"),  # once a rate of 1
            ("/fx/rates/USD/EUR", {"rate": "1e-31"}, "FX_VALIDATION_ERROR"),
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


def _code(response: httpx.Response) -> str:
    body = response.json()
    code: str = body["error_detail"]["code"] if "error_detail" in body else str(body)
    return code


class TestExactAmounts:
    async def test_inverse_pair_credits_what_the_stored_rate_buys(
        self, api: httpx.AsyncClient, db: Database
    ) -> None:
        """With only A/B = 151.50 stored, 1515 B (precision 1) buys exactly 10.00 A."""
        major, minor = _currencies()
        assert (
            await api.put(f"/fx/rates/{major}/{minor}", json={"rate": "151.50"})
        ).status_code == 200
        source, destination = await _balance(api, minor), await _balance(api, major)
        await _fund(api, source, 1_515, minor)
        body = _fx_body(
            source,
            destination,
            1_515,
            precision=1,
            currency=minor,
            destination_currency=major,
            destination_precision=100,
        )
        response = await api.post("/transactions/fx", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["rate_source"] == "inverse:manual"
        assert response.json()["destination_amount"]["precise_amount"] == 1_000
        for leg in response.json()["transactions"]:  # enough to recompute the amount exactly
            assert leg["meta_data"]["fx_rate_inverse_of"] == "151.50"
        assert await _amount(api, destination) == 1_000
        assert await _sums(db, major, minor) == {major: 0, minor: 0}

    async def test_precisions_differ_per_currency(
        self, api: httpx.AsyncClient, db: Database
    ) -> None:
        """10.01 at 151.5 into precision 1 is 1516 (1516.515 truncated); 1.00 at a 30-digit rate
        into precision 10^8 keeps every digit the rate buys."""
        src, yen, coin = _currencies()[0], *_currencies()
        source = await _balance(api, src)
        await _fund(api, source, 10_000, src)
        to_yen = await api.post(
            "/transactions/fx",
            json=_fx_body(
                source,
                await _balance(api, yen),
                1_001,
                currency=src,
                destination_currency=yen,
                destination_precision=1,
                rate="151.5",
            ),
        )
        assert to_yen.status_code == 201, to_yen.text
        assert to_yen.json()["destination_amount"] == {
            "precise_amount": 1_516,
            "precision": 1,
            "amount": "1516",
            "currency": yen,
        }
        to_coin = await api.post(
            "/transactions/fx",
            json=_fx_body(
                source,
                await _balance(api, coin),
                100,
                currency=src,
                destination_currency=coin,
                destination_precision=10**8,
                rate="0.0000105263157894736842105263157",
            ),
        )
        assert to_coin.status_code == 201, to_coin.text
        assert to_coin.json()["destination_amount"]["precise_amount"] == 1_052
        assert to_coin.json()["destination_amount"]["amount"] == "0.00001052"
        assert await _sums(db, src, yen, coin) == {src: 0, yen: 0, coin: 0}

    @pytest.mark.parametrize(
        ("extra", "code"),
        [
            ({"rate": "0"}, "FX_VALIDATION_ERROR"),
            ({"rate": "-0.92"}, "FX_VALIDATION_ERROR"),
            ({"rate": "NaN"}, "FX_VALIDATION_ERROR"),
            ({"rate": True}, "GEN_MALFORMED_REQUEST"),  # once read as a rate of 1
            ({"rate": "1", "destination_precision": True}, "GEN_MALFORMED_REQUEST"),
            ({"rate": "1e-31"}, "FX_VALIDATION_ERROR"),
            ({"rate": "1." + "1" * 30}, "FX_VALIDATION_ERROR"),
            ({"destination_currency": ""}, "FX_VALIDATION_ERROR"),
            ({"destination_currency": "E UR", "rate": "1"}, "FX_VALIDATION_ERROR"),
            ({"currency": "U SD", "rate": "1"}, "TXN_VALIDATION_ERROR"),  # as on /transactions
            ({"destination": None, "rate": "1"}, "TXN_VALIDATION_ERROR"),
            ({"destination_precision": 1.5, "rate": "1"}, "TXN_PRECISION_NOT_INTEGER"),
            ({"destination_precision": -100, "rate": "1"}, "TXN_PRECISION_NOT_INTEGER"),
            (
                {
                    "rate": "1",
                    "source": None,
                    "sources": [{"identifier": "@a", "distribution": "100%"}],
                },
                "FX_VALIDATION_ERROR",
            ),
            (
                {
                    "rate": "1",
                    "destination_precision": 10**18,
                    "precise_amount": "9" * 60,
                    "precision": 1,
                },
                "TXN_VALIDATION_ERROR",
            ),
        ],
    )
    async def test_a_bad_request_is_400_and_posts_nothing(
        self, *, api: httpx.AsyncClient, db: Database, extra: dict[str, Any], code: str
    ) -> None:
        """Each refused request answers 400 with its code and writes no leg."""
        source, destination = await _balance(api, "USD"), await _balance(api, "EUR")
        await _fund(api, source, 1_000, "USD")
        body = _fx_body(source, destination, 100, allow_overdraft=True)
        body.update(extra)
        response = await api.post("/transactions/fx", json=body)
        assert (response.status_code, _code(response)) == (400, code), response.text
        for reference in (body["reference"], body["reference"] + "_fx"):
            assert (await api.get(f"/transactions/reference/{reference}")).status_code == 404
        assert await _amount(api, destination) == 0

    async def test_destination_in_another_currency_refuses_both_legs(
        self, api: httpx.AsyncClient, db: Database
    ) -> None:
        """A destination balance that is not in destination_currency refuses the whole transfer."""
        source, destination = await _balance(api, "USD"), await _balance(api, "GBP")
        await _fund(api, source, 1_000, "USD")
        body = _fx_body(source, destination, 100, rate="0.9")
        response = await api.post("/transactions/fx", json=body)
        assert (response.status_code, _code(response)) == (400, "TXN_CURRENCY_MISMATCH")
        for reference in (body["reference"], body["reference"] + "_fx"):
            assert (await api.get(f"/transactions/reference/{reference}")).status_code == 404
        assert await _amount(api, source) == 1_000


class TestRatesApi:
    async def test_listing_shows_each_pair_exactly(self, api: httpx.AsyncClient) -> None:
        """GET /fx/rates lists set pairs, by pair, with the rate as exact text and its source."""
        base, quote = _currencies()
        rate = "0.000000123456789012345678901234"
        assert (await api.put(f"/fx/rates/{base}/{quote}", json={"rate": rate})).status_code == 200
        assert (await api.put(f"/fx/rates/{quote}/{base}", json={"rate": 8.1})).status_code == 200
        listed = (await api.get("/fx/rates")).json()
        mine = [r for r in listed if {r["base_currency"], r["quote_currency"]} == {base, quote}]
        assert [(r["base_currency"], r["rate"], r["source"]) for r in mine] == sorted(
            [(base, rate, "manual"), (quote, "8.1", "manual")]
        )
        assert all(r["as_of"].endswith("Z") for r in mine)
        pairs = [(r["base_currency"], r["quote_currency"]) for r in listed]
        assert pairs == sorted(pairs)
        assert ("USD", "EUR") in pairs  # the shipped file fills the table on first use

    async def test_a_pair_of_one_currency_is_400(self, api: httpx.AsyncClient) -> None:
        """Asking for the rate of USD in USD is 400 FX_VALIDATION_ERROR, not a rate of 1."""
        response = await api.get("/fx/rates/USD/USD")
        assert (response.status_code, _code(response)) == (400, "FX_VALIDATION_ERROR")


class TestProviderAnswers:
    async def test_a_timeout_is_provider_unavailable(self) -> None:
        """A provider that does not answer in time is a ProviderUnavailableError naming why."""

        def answer(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("no answer", request=request)

        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
            with pytest.raises(ProviderUnavailableError, match="ReadTimeout"):
                await FrankfurterProvider(http, base_url="https://rates.test").fetch_rates("USD")

    @pytest.mark.parametrize(
        "text",
        [
            '{"base":"USD","rates":{"EUR":0}}',
            '{"base":"USD","rates":{"EUR":-0.92}}',
            '{"base":"USD","rates":{"EUR":NaN}}',
            '{"base":"USD","rates":{"EUR":"abc"}}',
            '{"base":"USD","rates":[0.92]}',
            '{"base":"USD"}',
            '["USD"]',
            '{"base":"USD","rates":{' + ",".join(f'"C{i:04d}":1' for i in range(1_001)) + "}}",
        ],
    )
    async def test_garbage_is_provider_unavailable(self, text: str) -> None:
        """A zero, negative or non-numeric quote, missing or listed rates, or more quotes than
        one answer may carry: the whole answer is refused, never half used."""
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(lambda _: httpx.Response(200, text=text))
        ) as http:
            with pytest.raises(ProviderUnavailableError, match="something else than rates"):
                await FrankfurterProvider(http, base_url="https://rates.test").fetch_rates("USD")

    async def test_a_timed_out_refresh_keeps_the_last_rate(self, db: Database) -> None:
        """A refresh whose provider times out changes nothing and is counted as a failure."""
        base, quote = _currencies()
        answers: list[httpx.Response | str] = ["0.25"]
        async with _frankfurter(base, quote, answers) as http:
            refresher = RateRefresher(
                db,
                FrankfurterProvider(http, base_url="https://rates.test"),
                bases=[base],
                interval_s=60,
                clock=FrozenClock(NOW),
            )
            assert await refresher.refresh_once() == 1

        def hang(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectTimeout("no answer", request=request)

        async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http:
            refresher.provider = FrankfurterProvider(http, base_url="https://rates.test")
            assert await refresher.refresh_once() == 0
        async with db.connection() as conn:
            assert (await find_rate(conn, base, quote)).rate == Decimal("0.25")
        assert (refresher.refreshes, refresher.failures) == (1, 1)

    async def test_unusable_pairs_are_skipped_not_fatal(self, db: Database) -> None:
        """A quote for the base itself or a code no table holds is skipped; the rest is stored."""
        base, quote = _currencies()
        text = f'{{"base":"{base}","rates":{{"{quote}":"1.5","{base}":1,"BAD CODE":2}}}}'
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(lambda _: httpx.Response(200, text=text))
        ) as http:
            refresher = RateRefresher(
                db,
                FrankfurterProvider(http, base_url="https://rates.test"),
                bases=[base],
                interval_s=60,
                clock=FrozenClock(NOW),
            )
            assert await refresher.refresh_once() == 1
        async with db.connection() as conn:
            assert (await find_rate(conn, base, quote)).rate == Decimal("1.5")
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM ledger.exchange_rates WHERE base_currency = $1", base
                )
                == 1
            )

    async def test_an_answer_without_quotes_changes_nothing(self, db: Database) -> None:
        """An empty rates object is a successful refresh that writes no row."""
        base, _ = _currencies()
        text = f'{{"base":"{base}","rates":{{}}}}'
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(lambda _: httpx.Response(200, text=text))
        ) as http:
            refresher = RateRefresher(
                db,
                FrankfurterProvider(http, base_url="https://rates.test"),
                bases=[base],
                interval_s=60,
                clock=FrozenClock(NOW),
            )
            assert await refresher.refresh_once() == 0
        assert (refresher.refreshes, refresher.failures) == (1, 0)


def _rates_file(tmp_path: Path, text: str) -> StaticFileProvider:
    path = tmp_path / "rates.yaml"
    path.write_text(text)
    return StaticFileProvider(path)


class TestStaticFile:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("- {base: USD, quote: EUR, rate: '0.9'}\n", "needs a list of pairs"),
            ("as_of: '2026-11-30T00:00:00Z'\npairs: {USD: EUR}\n", "needs a list of pairs"),
            (
                "as_of: '2026-11-30T00:00:00Z'\npairs:\n  - {base: USD, quote: EUR, rate: 0.9}\n",
                "as a string",
            ),
            ("as_of: '2026-11-30T00:00:00Z'\npairs:\n  - USD/EUR 0.9\n", "as a string"),
            ("pairs:\n  - {base: USD, quote: EUR, rate: '0.9'}\n", "needs an as_of time"),
            (
                "as_of: '2026-11-30T00:00:00Z'\npairs:\n  - {base: USD, quote: EUR, rate: '0'}\n",
                "greater than zero",
            ),
            ("# " + "x" * (1 << 20) + "\n", "too large"),
        ],
    )
    def test_a_malformed_file_is_refused(self, tmp_path: Path, text: str, message: str) -> None:
        """A file that is not a bounded list of {base, quote, rate-as-text} with an as_of fails
        loudly rather than loading part of it, or a float's approximation of a rate."""
        with pytest.raises(FxValidationError, match=message):
            _rates_file(tmp_path, text).load()

    @pytest.mark.parametrize(
        "as_of",
        [
            "2026-11-30T00:00:00Z",
            "2026-11-30T00:00:00",
            "2026-11-30 00:00:00",
            "'2026-11-30T01:00:00+01:00'",
        ],
    )
    def test_as_of_is_read_as_utc(self, tmp_path: Path, as_of: str) -> None:
        """A YAML timestamp or text, with an offset or none (read as UTC), is one instant."""
        provider = _rates_file(
            tmp_path, f"as_of: {as_of}\npairs:\n  - {{base: USD, quote: EUR, rate: '0.9'}}\n"
        )
        (rate,) = provider.load()
        assert rate.as_of == datetime(2026, 11, 30, tzinfo=UTC)
        assert rate.source == "static"

    async def test_the_file_fills_gaps_only(self, tmp_path: Path, db: Database) -> None:
        """Loading a file writes its missing pairs and never replaces a stored rate."""
        base, quote = _currencies()
        third, _ = _currencies()
        provider = _rates_file(
            tmp_path,
            "source: desk\nas_of: '2026-11-30T00:00:00Z'\npairs:\n"
            f"  - {{base: {base}, quote: {quote}, rate: '2'}}\n"
            f"  - {{base: {base}, quote: {third}, rate: '3'}}\n",
        )
        assert await provider.fetch_rates(base) == {quote: Decimal(2), third: Decimal(3)}
        async with db.transaction() as conn:
            await store_rates(
                conn, [Rate(base, quote, Decimal("1.5"), "manual", NOW)], replace_existing=True
            )
            assert await load_static_rates(conn, provider) == 1
            kept, filled = await find_rate(conn, base, quote), await find_rate(conn, base, third)
        assert (kept.rate, kept.source) == (Decimal("1.5"), "manual")
        assert (filled.rate, filled.source) == (Decimal(3), "desk")
