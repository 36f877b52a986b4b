"""Blnk's own Python SDK (blnk-python 1.6.0) against our ledger, over real HTTP.

Every call goes through the unmodified SDK to a uvicorn server running the ledger app on the
test database; the assertions read what the SDK parsed (status, data, error code), which is
exactly what a Blnk user's code sees.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.ledger.servers import UA

pytestmark = pytest.mark.db


def _ref() -> str:
    return f"ref-{uuid.uuid4()}"


def _body(amount: int | str, **fields: Any) -> dict[str, Any]:
    """A transaction request of `amount` minor units in USD at precision 100, with a fresh
    reference; `fields` add to the request or replace any of these."""
    return {
        "precise_amount": amount,
        "precision": 100,
        "reference": _ref(),
        "currency": "USD",
        **fields,
    }


def _ledger(blnk: Any) -> str:
    response = blnk.ledgers.create(
        {"name": f"ledger-{uuid.uuid4()}", "meta_data": {"team": "payments"}}
    )
    assert response.status == 201, response.to_dict()
    ledger_id: str = response.data["ledger_id"]
    return ledger_id


def _balance(blnk: Any, ledger_id: str, currency: str = "USD") -> str:
    response = blnk.ledger_balances.create({"ledger_id": ledger_id, "currency": currency})
    assert response.status == 201, response.to_dict()
    balance_id: str = response.data["balance_id"]
    return balance_id


def _fund(blnk: Any, balance_id: str, amount: int, currency: str = "USD") -> dict[str, Any]:
    response = blnk.transactions.create(
        _body(
            amount,
            currency=currency,
            description="funding",
            source=f"@World{currency}",
            destination=balance_id,
            allow_overdraft=True,
            skip_queue=True,
        )
    )
    assert response.status == 201, response.to_dict()
    data: dict[str, Any] = response.data
    return data


def _move(blnk: Any, source: str, destination: str, amount: int, **extra: Any) -> Any:
    fields = {"description": "move", "source": source, "destination": destination}
    return blnk.transactions.create(_body(amount, **{**fields, "skip_queue": True, **extra}))


class TestSystem:
    def test_health(self, blnk: Any) -> None:
        """system.health() answers UP when the database answers."""
        response = blnk.system.health()
        assert response.status == 200
        assert response.data == {"status": "UP"}


class TestLedgers:
    def test_create_get_update_list(self, blnk: Any) -> None:
        """A ledger is created, read back, renamed and listed with Blnk's fields."""
        ledger_id = _ledger(blnk)
        assert ledger_id.startswith("ldg_")
        got = blnk.ledgers.get(ledger_id)
        assert got.status == 200
        assert got.data["meta_data"] == {"team": "payments"}
        renamed = blnk.ledgers.update(ledger_id, {"name": "renamed"})
        assert renamed.status == 200
        assert renamed.data["name"] == "renamed"
        listed = blnk.ledgers.list()
        assert listed.status == 200
        assert isinstance(listed.data, list)

    def test_unknown_ledger_is_404(self, blnk: Any) -> None:
        """An unknown ledger id answers 404 LGR_NOT_FOUND."""
        response = blnk.ledgers.get(f"ldg_{uuid.uuid4()}")
        assert response.status == 404
        assert response.error.code == "LGR_NOT_FOUND"


class TestBalances:
    def test_create_and_get(self, blnk: Any) -> None:
        """A new balance starts at zero in every figure, with Blnk's fields."""
        balance_id = _balance(blnk, _ledger(blnk))
        got = blnk.ledger_balances.get(balance_id, {"with_queued": True})
        assert got.status == 200
        data = got.data
        for name in ("balance", "credit_balance", "debit_balance", "inflight_balance"):
            assert data[name] == 0
        assert data["queued_debit_balance"] == 0
        assert data["currency"] == "USD"

    def test_indicator_balance_is_created_on_first_use(self, blnk: Any) -> None:
        """`@World` in a transaction creates the indicator balance, found by indicator and currency."""
        _fund(blnk, _balance(blnk, _ledger(blnk), "NGN"), 500, "NGN")
        found = blnk.ledger_balances.get_by_indicator("@WorldNGN", "NGN")
        assert found.status == 200
        assert found.data["indicator"] == "@WorldNGN"
        assert found.data["balance"] <= -500

    def test_unknown_balance_is_404(self, blnk: Any) -> None:
        """An unknown balance answers 404 BAL_NOT_FOUND."""
        response = blnk.ledger_balances.get(f"bln_{uuid.uuid4()}")
        assert response.status == 404
        assert response.error.code == "BAL_NOT_FOUND"

    def test_balance_at_a_time(self, blnk: Any) -> None:
        """The historical balance replays applied transactions up to the timestamp."""
        balance_id = _balance(blnk, _ledger(blnk))
        _fund(blnk, balance_id, 1234)
        now = blnk.ledger_balances.get_at(
            balance_id, {"timestamp": "2999-01-01T00:00:00Z", "from_source": True}
        )
        assert now.status == 200, now.to_dict()
        assert now.data["balance"]["balance"] == 1234
        before = blnk.ledger_balances.get_at(balance_id, {"timestamp": "2000-01-01T00:00:00Z"})
        assert before.data["balance"]["balance"] == 0

    def test_an_effective_date_places_a_transaction_in_history(self, blnk: Any) -> None:
        """A back-dated transaction counts from its effective date, not from when it was
        posted; an undated one from now."""
        balance_id = _balance(blnk, _ledger(blnk))
        dated = blnk.transactions.create(
            _body(
                700,
                description="back-dated",
                source="@WorldUSD",
                destination=balance_id,
                allow_overdraft=True,
                skip_queue=True,
                effective_date="2020-06-01T12:00:00Z",
            )
        )
        assert dated.status == 201, dated.to_dict()
        _fund(blnk, balance_id, 50)

        def at(timestamp: str) -> int:
            response = blnk.ledger_balances.get_at(
                balance_id, {"timestamp": timestamp, "from_source": True}
            )
            assert response.status == 200, response.to_dict()
            amount: int = response.data["balance"]["balance"]
            return amount

        assert at("2020-06-01T11:59:59Z") == 0
        assert at("2020-07-01T00:00:00Z") == 700
        assert at("2999-01-01T00:00:00Z") == 750

    def test_include_adds_the_ledger(self, blnk: Any, ledger_url: str) -> None:
        """`include=ledger` adds the balance's ledger; without it the key is absent."""
        ledger_id = _ledger(blnk)
        balance_id = _balance(blnk, ledger_id)
        plain = httpx.get(f"{ledger_url}/balances/{balance_id}", headers=UA, timeout=30)
        assert plain.status_code == 200, plain.text
        assert "ledger" not in plain.json()
        included = httpx.get(
            f"{ledger_url}/balances/{balance_id}",
            params=[("include", "ledger"), ("include", "identity")],
            headers=UA,
            timeout=30,
        )
        assert included.status_code == 200, included.text
        assert included.json()["ledger"]["ledger_id"] == ledger_id


class TestErrorBodies:
    """The SDK reads Blnk's code and message from each of Blnk's error bodies, and hands the raw
    body over as `data`: the standard `error`, or the older `errors` of a validation path."""

    def test_balance_validation_is_under_errors(self, blnk: Any) -> None:
        """Lineage without an identity is 400 BAL_VALIDATION_ERROR, its message under `errors`."""
        response = blnk.ledger_balances.create(
            {"ledger_id": _ledger(blnk), "currency": "USD", "track_fund_lineage": True}
        )
        assert response.status == 400
        assert response.error.code == "BAL_VALIDATION_ERROR"
        assert response.data["errors"] == response.error.message == response.message
        assert "error" not in response.data

    def test_not_found_keeps_error(self, blnk: Any) -> None:
        """Unknown transactions and balances keep the standard `error` key."""
        for response, code in (
            (blnk.transactions.get(f"txn_{uuid.uuid4()}"), "TXN_NOT_FOUND"),
            (blnk.ledger_balances.get(f"bln_{uuid.uuid4()}"), "BAL_NOT_FOUND"),
        ):
            assert response.status == 404
            assert response.error.code == code
            assert response.data["error"] == response.error.message
            assert "errors" not in response.data


class TestTransactions:
    def test_immediate_transfer_moves_money(self, blnk: Any) -> None:
        """skip_queue applies at once: the source is debited and the destination credited."""
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 10_000)
        response = _move(blnk, alice, bob, 2_550)
        assert response.status == 201, response.to_dict()
        assert response.data["status"] == "APPLIED"
        assert response.data["precise_amount"] == 2550
        assert response.data["amount"] == 25.5
        assert blnk.ledger_balances.get(alice).data["balance"] == 7_450
        assert blnk.ledger_balances.get(bob).data["balance"] == 2_550

    def test_insufficient_funds_is_400_and_changes_nothing(self, blnk: Any) -> None:
        """Without overdraft a transfer beyond the balance is refused with TXN_INSUFFICIENT_FUNDS."""
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 100)
        response = _move(blnk, alice, bob, 101)
        assert response.status == 400
        assert response.error.code == "TXN_INSUFFICIENT_FUNDS"
        assert blnk.ledger_balances.get(alice).data["balance"] == 100

    def test_duplicate_reference_is_409(self, blnk: Any) -> None:
        """A reference can be used once; the second use is 409 TXN_DUPLICATE_REFERENCE."""
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 1_000)
        reference = _ref()
        assert _move(blnk, alice, bob, 10, reference=reference).status == 201
        again = _move(blnk, alice, bob, 10, reference=reference)
        assert again.status == 409
        assert again.error.code == "TXN_DUPLICATE_REFERENCE"
        assert blnk.ledger_balances.get(bob).data["balance"] == 10

    def test_get_and_by_reference(self, blnk: Any) -> None:
        """A transaction is found by id and by reference."""
        ledger_id = _ledger(blnk)
        posted = _fund(blnk, _balance(blnk, ledger_id), 77)
        by_id = blnk.transactions.get(posted["transaction_id"])
        assert by_id.status == 200
        assert by_id.data["reference"] == posted["reference"]
        by_reference = blnk.transactions.get_by_reference(posted["reference"])
        assert by_reference.data["transaction_id"] == posted["transaction_id"]
        missing = blnk.transactions.get(f"txn_{uuid.uuid4()}")
        assert missing.status == 404
        assert missing.error.code == "TXN_NOT_FOUND"

    def test_queued_outcome_is_findable(self, blnk: Any) -> None:
        """A queued transaction answers QUEUED with its outcome; its child is APPLIED."""
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 500)
        response = _move(blnk, alice, bob, 200, skip_queue=False)
        assert response.status == 201
        assert response.data["status"] == "QUEUED"
        outcome = response.data["outcome"]
        assert outcome["status"] == "APPLIED"
        child = blnk.transactions.get(outcome["transaction_id"])
        assert child.data["parent_transaction"] == response.data["transaction_id"]
        assert child.data["reference"] == response.data["reference"] + "_q"
        assert (
            blnk.transactions.get(response.data["transaction_id"]).data["outcome"]["status"]
            == "APPLIED"
        )

    def test_queued_insufficient_funds_is_rejected_child(self, blnk: Any) -> None:
        """On the queued path a refusal is a REJECTED child with Blnk's rejection reason."""
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        response = _move(blnk, alice, bob, 200, skip_queue=False)
        assert response.status == 201
        assert response.data["outcome"]["status"] == "REJECTED"
        child = blnk.transactions.get(response.data["outcome"]["transaction_id"])
        assert child.data["status"] == "REJECTED"
        assert "insufficient" in child.data["meta_data"]["blnk_rejection_reason"]

    def test_amount_as_float_and_precise_amount_as_string(self, blnk: Any) -> None:
        """`amount` converts with the precision; a digit-string precise_amount is accepted exactly."""
        balance_id = _balance(blnk, _ledger(blnk))
        as_float = blnk.transactions.create(
            {
                "amount": 10.05,
                "precision": 100,
                "reference": _ref(),
                "currency": "USD",
                "description": "f",
                "source": "@WorldUSD",
                "destination": balance_id,
                "allow_overdraft": True,
                "skip_queue": True,
            }
        )
        assert as_float.status == 201, as_float.to_dict()
        assert as_float.data["precise_amount"] == 1005
        big = blnk.transactions.create(
            {
                "precise_amount": "123456789012345678901",
                "precision": 100,
                "reference": _ref(),
                "currency": "USD",
                "description": "big",
                "source": "@WorldUSD",
                "destination": balance_id,
                "allow_overdraft": True,
                "skip_queue": True,
            }
        )
        assert big.status == 201, big.to_dict()
        assert big.data["precise_amount"] == 123456789012345678901
        assert blnk.ledger_balances.get(balance_id).data["balance"] == 123456789012345678901 + 1005


def _split_body(amount: int | str, **ends: Any) -> dict[str, Any]:
    """A skip_queue transaction of `amount` minor units with the given ends, legs and flags."""
    return _body(amount, **{"description": "split", "skip_queue": True, **ends})


def _split(blnk: Any, amount: int | str, **ends: Any) -> Any:
    return blnk.transactions.create(_split_body(amount, **ends))


def _post_split(ledger_url: str, amount: int | str, **ends: Any) -> httpx.Response:
    """The same over plain HTTP: the SDK checks a split's legs itself before it sends (in
    floats), so the server's own answer to legs the SDK would refuse is read this way."""
    body = _split_body(amount, **ends)
    return httpx.post(f"{ledger_url}/transactions", json=body, headers=UA, timeout=30)


def _legs(*legs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"identifier": identifier, "distribution": text} for identifier, text in legs]


def _amounts(blnk: Any, *balance_ids: str) -> list[int]:
    return [blnk.ledger_balances.get(b).data["balance"] for b in balance_ids]


class TestSplits:
    def test_destinations_by_percentage_fixed_and_left(self, blnk: Any) -> None:
        """Fixed legs first, then percentages of the total rounded down, then "left" takes the
        rest; each leg is its own child of the returned id, which is not itself a row."""
        ledger_id = _ledger(blnk)
        alice, bob, carol, dave = (_balance(blnk, ledger_id) for _ in range(4))
        _fund(blnk, alice, 10_000)
        legs = _legs((bob, "50%"), (carol, "2.00"), (dave, "left"))
        response = _split(blnk, 1_001, source=alice, destinations=legs)
        assert response.status == 201, response.to_dict()
        assert _amounts(blnk, alice, bob, carol, dave) == [10_000 - 1_001, 500, 200, 301]
        parent = response.data["transaction_id"]
        children = {}
        for leg in response.data["destinations"]:
            child = blnk.transactions.get(leg["transaction_id"])
            assert child.status == 200, child.to_dict()
            assert child.data["parent_transaction"] == parent
            assert child.data["source"] == alice
            children[child.data["destination"]] = child.data["precise_amount"]
        assert children == {bob: 500, carol: 200, dave: 301}
        assert blnk.transactions.get(parent).status == 404

    def test_sources_split_the_debit(self, blnk: Any) -> None:
        """With `sources`, each leg debits its balance its share of the amount."""
        ledger_id = _ledger(blnk)
        alice, bob, carol = (_balance(blnk, ledger_id) for _ in range(3))
        _fund(blnk, alice, 1_000)
        _fund(blnk, bob, 1_000)
        legs = _legs((alice, "60%"), (bob, "left"))
        response = _split(blnk, 500, sources=legs, destination=carol)
        assert response.status == 201, response.to_dict()
        assert _amounts(blnk, alice, bob, carol) == [700, 800, 500]

    def test_a_queued_destinations_split_stores_its_parent(self, blnk: Any) -> None:
        """Without skip_queue the request is stored QUEUED, with Blnk's empty `destination`
        and its legs, and each leg runs as its child."""
        ledger_id = _ledger(blnk)
        alice, bob, carol = (_balance(blnk, ledger_id) for _ in range(3))
        _fund(blnk, alice, 1_000)
        legs = _legs((bob, "10%"), (carol, "left"))
        response = _split(blnk, 500, source=alice, destinations=legs, skip_queue=False)
        assert response.status == 201, response.to_dict()
        assert response.data["outcome"]["status"] == "APPLIED"
        parent = blnk.transactions.get(response.data["transaction_id"])
        assert parent.status == 200, parent.to_dict()
        assert (parent.data["status"], parent.data["destination"]) == ("QUEUED", "")
        assert [leg["identifier"] for leg in parent.data["destinations"]] == [bob, carol]
        assert _amounts(blnk, alice, bob, carol) == [500, 50, 450]

    def test_a_queued_split_is_partial_when_one_leg_lacks_funds(self, blnk: Any) -> None:
        """On the queued path each leg is a child of the stored parent, referenced `_1`, `_2`;
        a leg without funds is a REJECTED child and the parent's outcome is PARTIAL."""
        ledger_id = _ledger(blnk)
        alice, bob, carol = (_balance(blnk, ledger_id) for _ in range(3))
        _fund(blnk, alice, 1_000)
        legs = _legs((alice, "50%"), (bob, "left"))
        response = _split(blnk, 600, sources=legs, destination=carol, skip_queue=False)
        assert response.status == 201, response.to_dict()
        assert response.data["status"] == "QUEUED"
        outcome = response.data["outcome"]
        assert outcome["status"] == "PARTIAL"
        children = [blnk.transactions.get(i).data for i in outcome["transaction_ids"]]
        assert [c["reference"] for c in children] == [
            response.data["reference"] + "_1",
            response.data["reference"] + "_2",
        ]
        assert [(c["source"], c["status"]) for c in children] == [
            (alice, "APPLIED"),
            (bob, "REJECTED"),
        ]
        assert all(c["parent_transaction"] == response.data["transaction_id"] for c in children)
        assert _amounts(blnk, alice, bob, carol) == [700, 0, 300]

    @pytest.mark.parametrize(
        "distributions",
        [
            ("60%", "50%"),
            ("left", "left"),
            ("20.00", "left"),
            ("abc%", "left"),
            ("1E-999999999%", "left"),
        ],
    )
    def test_legs_that_do_not_fit_are_400_and_change_nothing(
        self, blnk: Any, ledger_url: str, distributions: tuple[str, str]
    ) -> None:
        ledger_id = _ledger(blnk)
        alice, bob, carol = (_balance(blnk, ledger_id) for _ in range(3))
        _fund(blnk, alice, 10_000)
        legs = _legs(*zip((bob, carol), distributions, strict=True))
        response = _post_split(ledger_url, 1_000, source=alice, destinations=legs)
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == "TXN_INVALID_DISTRIBUTION"
        assert _amounts(blnk, alice, bob, carol) == [10_000, 0, 0]

    @pytest.mark.parametrize("skip_queue", [True, False])
    def test_an_inflight_split_holds_each_leg(
        self, blnk: Any, ledger_url: str, skip_queue: bool
    ) -> None:
        """With `inflight`, each leg is its own hold, committed or voided by its own id."""
        ledger_id = _ledger(blnk)
        alice, bob, carol = (_balance(blnk, ledger_id) for _ in range(3))
        _fund(blnk, alice, 1_000)
        response = _post_split(
            ledger_url,
            400,
            source=alice,
            destinations=_legs((bob, "25%"), (carol, "left")),
            inflight=True,
            skip_queue=skip_queue,
        )
        assert response.status_code == 201, response.text
        assert blnk.ledger_balances.get(alice).data["inflight_debit_balance"] == 400
        first, second = (leg["transaction_id"] for leg in response.json()["destinations"])
        assert blnk.transactions.get(first).data["status"] == "INFLIGHT"
        committed = blnk.transactions.update_status(first, {"status": "commit", "skip_queue": True})
        assert committed.status == 200, committed.to_dict()
        voided = blnk.transactions.update_status(second, {"status": "void", "skip_queue": True})
        assert voided.status == 200, voided.to_dict()
        assert _amounts(blnk, alice, bob, carol) == [900, 100, 0]
        assert blnk.ledger_balances.get(alice).data["inflight_debit_balance"] == 0

    @pytest.mark.parametrize("atomic", [True, False])
    def test_a_split_inside_a_bulk(self, blnk: Any, ledger_url: str, atomic: bool) -> None:
        """A bulk item may be a split; its legs post with the other items (and, atomic, all
        or none: an item without funds leaves every leg unposted)."""
        ledger_id = _ledger(blnk)
        alice, bob, carol = (_balance(blnk, ledger_id) for _ in range(3))
        _fund(blnk, alice, 1_000)

        def item(amount: int, **ends: Any) -> dict[str, Any]:
            return _body(amount, description="bulk split", source=alice, **ends)

        split = item(
            200,
            destinations=_legs((bob, "50%"), (carol, "left")),
        )
        posted = httpx.post(
            f"{ledger_url}/transactions/bulk",
            json={"transactions": [item(100, destination=bob), split], "atomic": atomic},
            headers=UA,
            timeout=30,
        )
        assert posted.status_code == 201, posted.text
        assert _amounts(blnk, alice, bob, carol) == [700, 200, 100]
        refused = httpx.post(
            f"{ledger_url}/transactions/bulk",
            json={
                "transactions": [{**split, "reference": _ref()}, item(5_000, destination=bob)],
                "atomic": True,
            },
            headers=UA,
            timeout=30,
        )
        assert refused.status_code == 400, refused.text
        assert _amounts(blnk, alice, bob, carol) == [700, 200, 100]

    @pytest.mark.parametrize("skip_queue", [True, False])
    def test_a_leg_below_one_minor_unit_is_a_zero_child(
        self, blnk: Any, ledger_url: str, skip_queue: bool
    ) -> None:
        """1 % of 5 minor units rounds down to nothing: that leg is its own child of amount 0
        (as in Blnk), the `left` leg takes all 5, and the split is not refused."""
        ledger_id = _ledger(blnk)
        alice, bob, carol = (_balance(blnk, ledger_id) for _ in range(3))
        _fund(blnk, alice, 100)
        response = _post_split(
            ledger_url,
            5,
            source=alice,
            destinations=_legs((bob, "1%"), (carol, "left")),
            skip_queue=skip_queue,
        )
        assert response.status_code == 201, response.text
        assert _amounts(blnk, alice, bob, carol) == [95, 0, 5]
        legs = response.json()["destinations"]
        zero = blnk.transactions.get(legs[0]["transaction_id"]).data
        assert (zero["precise_amount"], zero["status"], zero["destination"]) == (0, "APPLIED", bob)

    def test_a_split_of_a_30_digit_amount_is_exact(self, blnk: Any, ledger_url: str) -> None:
        """Halves of an amount past the 28 digits of Python's default decimal context: the
        odd unit goes to the first of the two largest legs, nothing is lost or refused."""
        ledger_id = _ledger(blnk)
        bob, carol = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        total = 123_456_789_012_345_678_901_234_567_891
        response = _post_split(
            ledger_url,
            str(total),
            source="@WorldUSD",
            destinations=_legs((bob, "50%"), (carol, "50%")),
            allow_overdraft=True,
        )
        assert response.status_code == 201, response.text
        assert _amounts(blnk, bob, carol) == [total // 2 + 1, total // 2]


def _preview_rows(preview: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """Each previewed balance: (role, current balance, resulting balance)."""
    return {
        row["balance_id"]: (row["role"], row["current_balance"], row["resulting_balance"])
        for row in preview["balances"]
    }


class TestDryRuns:
    def test_a_transfer_preview_writes_nothing(self, blnk: Any) -> None:
        """`dry_run` answers 200 with each balance before and after, as decimal text; nothing
        moves and the reference stays free."""
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 1_000)
        reference = _ref()
        preview = _move(blnk, alice, bob, 300, reference=reference, dry_run=True)
        assert preview.status == 200, preview.to_dict()
        data = preview.data
        assert (data["dry_run"], data["would_apply"], data["operation"]) == (
            True,
            True,
            "transaction",
        )
        assert (data["precise_amount"], data["reference"], data["status"]) == (
            "300",
            reference,
            "APPLIED",
        )
        assert _preview_rows(data) == {
            alice: ("source", "1000", "700"),
            bob: ("destination", "0", "300"),
        }
        assert _amounts(blnk, alice, bob) == [1_000, 0]
        assert _move(blnk, alice, bob, 300, reference=reference).status == 201

    def test_a_refused_preview_says_why(self, blnk: Any) -> None:
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 100)
        preview = _move(blnk, alice, bob, 101, dry_run=True)
        assert preview.status == 200, preview.to_dict()
        assert preview.data["would_apply"] is False
        assert preview.data["rejection"]["code"] == "TXN_INSUFFICIENT_FUNDS"
        assert _amounts(blnk, alice, bob) == [100, 0]

    def test_an_indicator_not_yet_created_is_previewed_virtual(self, blnk: Any) -> None:
        """A preview from an indicator balance that does not exist shows it as virtual and
        creates nothing."""
        bob = _balance(blnk, _ledger(blnk))
        indicator = f"@Dry{uuid.uuid4().hex[:12]}"
        preview = _move(blnk, indicator, bob, 250, dry_run=True, allow_overdraft=True)
        assert preview.status == 200, preview.to_dict()
        rows = {row["balance_id"]: row for row in preview.data["balances"]}
        assert rows[indicator]["virtual"] is True
        assert rows[indicator]["resulting_balance"] == "-250"
        assert blnk.ledger_balances.get_by_indicator(indicator, "USD").status == 404

    def test_a_bulk_preview_applies_items_cumulatively_and_writes_nothing(self, blnk: Any) -> None:
        """The second item sees the first one's effect: 600 + 600 from 1,000 would fail."""
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 1_000)
        items = [_body(600, description="preview", source=alice, destination=bob) for _ in "ab"]
        fits = blnk.transactions.create_bulk(
            {"transactions": items[:1], "atomic": True, "dry_run": True}
        )
        assert fits.status == 200, fits.to_dict()
        assert (fits.data["would_apply"], fits.data["cumulative"]) == (True, True)
        too_much = blnk.transactions.create_bulk(
            {"transactions": items, "atomic": True, "dry_run": True}
        )
        assert too_much.status == 200, too_much.to_dict()
        assert too_much.data["would_apply"] is False
        assert too_much.data["transaction_count"] == 2
        assert _amounts(blnk, alice, bob) == [1_000, 0]

    @pytest.mark.parametrize("action", ["commit", "void"])
    def test_an_inflight_preview_leaves_the_hold(self, blnk: Any, action: str) -> None:
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 5_000)
        held = _move(blnk, alice, bob, 1_000, inflight=True)
        assert held.status == 201, held.to_dict()
        hold = held.data["transaction_id"]
        preview = blnk.transactions.update_status(
            hold, {"status": action, "skip_queue": True, "dry_run": True}
        )
        assert preview.status == 200, preview.to_dict()
        assert (preview.data["would_apply"], preview.data["operation"]) == (True, action)
        assert blnk.ledger_balances.get(alice).data["inflight_debit_balance"] == 1_000
        done = blnk.transactions.update_status(hold, {"status": action, "skip_queue": True})
        assert done.status == 200, done.to_dict()
        assert blnk.ledger_balances.get(alice).data["inflight_debit_balance"] == 0


class TestPostingRules:
    def test_an_overdraft_limit_is_a_floor_in_major_units(self, blnk: Any) -> None:
        """`overdraft_limit` 2 (USD, precision 100) lets a balance of 100 go to -200, no lower;
        the refusal carries Blnk's insufficient-funds code and changes nothing."""
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 100)
        assert _move(blnk, alice, bob, 300, overdraft_limit=2).status == 201
        refused = _move(blnk, alice, bob, 1, overdraft_limit=2)
        assert refused.status == 400, refused.to_dict()
        assert refused.error.code == "TXN_INSUFFICIENT_FUNDS"
        assert _amounts(blnk, alice, bob) == [-200, 300]

    def test_an_overdraft_limit_past_28_digits_is_exact(self, blnk: Any, ledger_url: str) -> None:
        """A limit whose floor in minor units has 30 digits: the floor is exact, not rounded in
        Python's 28-digit default decimal context (which allowed 9 units more)."""
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        floor = 123_456_789_012_345_678_901_234_567_891
        limit = "1234567890123456789012345678.91"

        def move(amount: int) -> httpx.Response:
            body = _body(
                str(amount), source=alice, destination=bob, skip_queue=True, overdraft_limit=limit
            )
            return httpx.post(f"{ledger_url}/transactions", json=body, headers=UA, timeout=30)

        refused = move(floor + 1)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
        assert _amounts(blnk, alice, bob) == [0, 0]
        assert move(floor).status_code == 201
        assert _amounts(blnk, alice, bob) == [-floor, floor]

    def test_a_balance_in_another_currency_is_refused(self, blnk: Any) -> None:
        ledger_id = _ledger(blnk)
        dollars, euros = _balance(blnk, ledger_id), _balance(blnk, ledger_id, "EUR")
        _fund(blnk, dollars, 1_000)
        refused = _move(blnk, dollars, euros, 10)
        assert refused.status == 400, refused.to_dict()
        assert refused.error.code == "TXN_CURRENCY_MISMATCH"
        assert _amounts(blnk, dollars, euros) == [1_000, 0]

    def test_a_balance_cannot_pay_itself(self, blnk: Any) -> None:
        alice = _balance(blnk, _ledger(blnk))
        _fund(blnk, alice, 1_000)
        refused = _move(blnk, alice, alice, 10)
        assert refused.status == 400, refused.to_dict()
        assert _amounts(blnk, alice) == [1_000]

    def test_an_unknown_balance_is_404_and_nothing_is_written(self, blnk: Any) -> None:
        alice = _balance(blnk, _ledger(blnk))
        _fund(blnk, alice, 1_000)
        reference = _ref()
        refused = _move(blnk, alice, f"bln_{uuid.uuid4()}", 10, reference=reference)
        assert refused.status == 404, refused.to_dict()
        assert refused.error.code == "BAL_NOT_FOUND"
        assert blnk.transactions.get_by_reference(reference).status == 404
        assert _amounts(blnk, alice) == [1_000]


class TestInflight:
    def _hold(self, blnk: Any, amount: int = 1_000) -> tuple[str, str, str]:
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 5_000)
        held = _move(blnk, alice, bob, amount, inflight=True)
        assert held.status == 201, held.to_dict()
        assert held.data["status"] == "INFLIGHT"
        return held.data["transaction_id"], alice, bob

    def test_partial_commits_then_void_the_rest(self, blnk: Any) -> None:
        """Commit 300 and 200 of a 1,000 hold, void the remaining 500; balances follow."""
        hold, alice, bob = self._hold(blnk)
        alice_figures = blnk.ledger_balances.get(alice).data
        assert alice_figures["inflight_debit_balance"] == 1_000
        first = blnk.transactions.update_status(
            hold, {"status": "commit", "precise_amount": 300, "skip_queue": True}
        )
        assert first.status == 200, first.to_dict()
        assert first.data["status"] == "APPLIED"
        assert first.data["parent_transaction"] == hold
        second = blnk.transactions.update_status(
            hold, {"status": "commit", "amount": 2, "skip_queue": True}
        )
        assert second.data["precise_amount"] == 200
        void = blnk.transactions.update_status(hold, {"status": "void", "skip_queue": True})
        assert void.status == 200
        assert void.data["status"] == "VOID"
        assert void.data["precise_amount"] == 500
        alice_after = blnk.ledger_balances.get(alice).data
        assert alice_after["balance"] == 4_500
        assert alice_after["inflight_debit_balance"] == 0
        assert blnk.ledger_balances.get(bob).data["balance"] == 500

    def test_second_void_is_409(self, blnk: Any) -> None:
        """Voiding twice answers 409 TXN_ALREADY_VOIDED."""
        hold, _, _ = self._hold(blnk)
        assert (
            blnk.transactions.update_status(hold, {"status": "void", "skip_queue": True}).status
            == 200
        )
        again = blnk.transactions.update_status(hold, {"status": "void", "skip_queue": True})
        assert again.status == 409
        assert again.error.code == "TXN_ALREADY_VOIDED"

    def test_over_commit_is_400(self, blnk: Any) -> None:
        """Committing more than the hold has left is 400 TXN_COMMIT_AMOUNT_EXCEEDED."""
        hold, _, _ = self._hold(blnk)
        response = blnk.transactions.update_status(
            hold, {"status": "commit", "precise_amount": 1_001, "skip_queue": True}
        )
        assert response.status == 400
        assert response.error.code == "TXN_COMMIT_AMOUNT_EXCEEDED"

    def test_commit_after_full_commit_is_409(self, blnk: Any) -> None:
        """Nothing left to commit answers 409 TXN_ALREADY_COMMITTED."""
        hold, _, _ = self._hold(blnk)
        assert (
            blnk.transactions.update_status(hold, {"status": "commit", "skip_queue": True}).status
            == 200
        )
        again = blnk.transactions.update_status(hold, {"status": "commit", "skip_queue": True})
        assert again.status == 409
        assert again.error.code == "TXN_ALREADY_COMMITTED"

    def test_holds_count_against_available_funds(self, blnk: Any) -> None:
        """Six holds of 1,000 on 5,000 cannot all pass (Blnk's issue #181): the sixth is refused."""
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 5_000)
        statuses = [_move(blnk, alice, bob, 1_000, inflight=True).status for _ in range(6)]
        assert statuses == [201] * 5 + [400]

    def test_bulk_commit_and_void_report_per_item(self, blnk: Any) -> None:
        """Bulk commit and void answer one result per hold with Blnk's codes."""
        first, _, _ = self._hold(blnk)
        second, _, _ = self._hold(blnk)
        committed = blnk.transactions.bulk_commit_inflight(
            {
                "transactions": [
                    {"transaction_id": first},
                    {"transaction_id": f"txn_{uuid.uuid4()}"},
                ],
                "skip_queue": True,
            }
        )
        assert committed.status == 200, committed.to_dict()
        assert committed.data["succeeded"] == 1
        assert committed.data["failed"] == 1
        assert committed.data["results"][1]["code"] == "NOT_FOUND"
        voided = blnk.transactions.bulk_void_inflight(
            {"transaction_ids": [second, first], "skip_queue": True}
        )
        assert [r["status"] for r in voided.data["results"]] == ["succeeded", "failed"]
        assert voided.data["results"][1]["code"] == "ALREADY_COMMITTED"


class TestQueuedHolds:
    def test_a_queued_hold_is_committed_through_its_parent_id(self, blnk: Any) -> None:
        """A hold posted without skip_queue is a QUEUED parent with an INFLIGHT child; a commit
        naming the parent reaches the child, and without skip_queue it answers 200 with the
        still-INFLIGHT hold, `queued: true` and the commit's outcome."""
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 5_000)
        held = _move(blnk, alice, bob, 1_000, inflight=True, skip_queue=False)
        assert held.status == 201, held.to_dict()
        assert (held.data["status"], held.data["outcome"]["status"]) == ("QUEUED", "INFLIGHT")
        hold_child = held.data["outcome"]["transaction_id"]
        committed = blnk.transactions.update_status(
            held.data["transaction_id"], {"status": "commit", "precise_amount": 400}
        )
        assert committed.status == 200, committed.to_dict()
        assert committed.data["transaction_id"] == hold_child
        assert committed.data["status"] == "INFLIGHT"
        assert committed.data["queued"] is True
        assert committed.data["outcome"]["status"] == "APPLIED"
        figures = blnk.ledger_balances.get(alice).data
        assert (figures["balance"], figures["inflight_debit_balance"]) == (4_600, 600)

    @pytest.mark.parametrize("amount", [{"precise_amount": -5}, {"amount": -0.5}])
    def test_a_negative_commit_is_400_and_leaves_the_hold(
        self, blnk: Any, amount: dict[str, Any]
    ) -> None:
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 5_000)
        held = _move(blnk, alice, bob, 1_000, inflight=True)
        assert held.status == 201, held.to_dict()
        refused = blnk.transactions.update_status(
            held.data["transaction_id"], {"status": "commit", "skip_queue": True, **amount}
        )
        assert refused.status == 400, refused.to_dict()
        assert blnk.ledger_balances.get(alice).data["inflight_debit_balance"] == 1_000

    def test_a_commit_in_major_units_uses_the_holds_precision(self, blnk: Any) -> None:
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 5_000)
        held = _move(blnk, alice, bob, 1_000, inflight=True)
        committed = blnk.transactions.update_status(
            held.data["transaction_id"], {"status": "commit", "amount": 2.5, "skip_queue": True}
        )
        assert committed.status == 200, committed.to_dict()
        assert committed.data["precise_amount"] == 250
        assert _amounts(blnk, bob) == [250]


class TestRefundsAndBulk:
    def test_refund_once(self, blnk: Any) -> None:
        """A refund reverses the transfer; a second refund is 409."""
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 1_000)
        moved = _move(blnk, alice, bob, 400)
        refund = blnk.transactions.refund(moved.data["transaction_id"], {"skip_queue": True})
        assert refund.status == 201, refund.to_dict()
        assert refund.data["source"] == bob
        assert blnk.ledger_balances.get(alice).data["balance"] == 1_000
        again = blnk.transactions.refund(moved.data["transaction_id"], {"skip_queue": True})
        assert again.status == 409
        assert again.error.code == "TXN_ALREADY_REFUNDED"

    def test_only_an_applied_transaction_can_be_refunded(self, blnk: Any) -> None:
        """An unknown id is 404; a hold (INFLIGHT) is 400 TXN_INVALID_STATUS_ACTION and nothing
        moves; a refund whose payer has spent the money still posts, overdrawing it (Blnk
        always posts refunds with allow_overdraft)."""
        ledger_id = _ledger(blnk)
        alice, bob, carol = (_balance(blnk, ledger_id) for _ in range(3))
        _fund(blnk, alice, 1_000)
        unknown = blnk.transactions.refund(f"txn_{uuid.uuid4()}", {"skip_queue": True})
        assert unknown.status == 404, unknown.to_dict()
        assert unknown.error.code == "TXN_NOT_FOUND"
        held = _move(blnk, alice, bob, 300, inflight=True)
        refused = blnk.transactions.refund(held.data["transaction_id"], {"skip_queue": True})
        assert refused.status == 400, refused.to_dict()
        assert refused.error.code == "TXN_INVALID_STATUS_ACTION"
        moved = _move(blnk, alice, bob, 200)
        assert _move(blnk, bob, carol, 200).status == 201
        spent = blnk.transactions.refund(moved.data["transaction_id"], {"skip_queue": True})
        assert spent.status == 201, spent.to_dict()
        figures = blnk.ledger_balances.get(alice).data
        assert (figures["balance"], figures["inflight_debit_balance"]) == (1_000, 300)
        assert _amounts(blnk, bob, carol) == [-200, 200]

    def test_atomic_bulk_is_all_or_nothing(self, blnk: Any) -> None:
        """An atomic bulk with one refused item applies none of its items."""
        ledger_id = _ledger(blnk)
        alice, bob = _balance(blnk, ledger_id), _balance(blnk, ledger_id)
        _fund(blnk, alice, 100)
        items = [_body(60, description=text, source=alice, destination=bob) for text in "ab"]
        refused = blnk.transactions.create_bulk({"transactions": items, "atomic": True})
        assert refused.status == 400, refused.to_dict()
        assert refused.data["batch_id"].startswith("bulk_")
        assert blnk.ledger_balances.get(bob).data["balance"] == 0
        items[1]["precise_amount"] = 40
        applied = blnk.transactions.create_bulk({"transactions": items, "atomic": True})
        assert applied.status == 201, applied.to_dict()
        assert applied.data["transaction_count"] == 2
        assert blnk.ledger_balances.get(bob).data["balance"] == 100

    def test_filter_with_count(self, blnk: Any) -> None:
        """A filter on the destination finds the balance's transactions with a total count."""
        balance_id = _balance(blnk, _ledger(blnk))
        for amount in (1, 2, 3):
            _fund(blnk, balance_id, amount)
        response = blnk.search.filter(
            {
                "filters": [{"field": "destination", "operator": "eq", "value": balance_id}],
                "include_count": True,
            },
            "transactions",
        )
        assert response.status == 200, response.to_dict()
        assert response.data["total_count"] == 3
        assert sorted(t["precise_amount"] for t in response.data["data"]) == [1, 2, 3]

    def test_query_filters_by_operator(self, blnk: Any, ledger_url: str) -> None:
        """`field_op=value` parameters: numbers, lists, ranges of instants (with or without an
        offset), patterns, metadata keys; a value that does not fit its field is 400."""
        balance_id = _balance(blnk, _ledger(blnk))
        for amount, channel in ((100, "card"), (250, "bank"), (400, "card")):
            body = _body(
                amount,
                reference=f"flt-{channel}-{uuid.uuid4()}",
                description="filter",
                source="@WorldUSD",
                destination=balance_id,
                allow_overdraft=True,
                skip_queue=True,
                meta_data={"channel": channel},
            )
            assert blnk.transactions.create(body).status == 201

        def amounts(**params: str) -> list[int]:
            response = httpx.get(
                f"{ledger_url}/transactions",
                params={"destination_eq": balance_id, **params},
                headers=UA,
                timeout=30,
            )
            assert response.status_code == 200, response.text
            return sorted(t["precise_amount"] for t in response.json())

        assert amounts() == [100, 250, 400]
        assert amounts(precise_amount_gte="250") == [250, 400]
        assert amounts(precise_amount_in="100,400") == [100, 400]
        assert amounts(precise_amount_between="200|300") == [250]
        assert amounts(**{"meta_data.channel_eq": "card"}) == [100, 400]
        assert amounts(reference_like="flt-bank-%") == [250]
        assert amounts(status_in="APPLIED,INFLIGHT") == [100, 250, 400]
        assert amounts(created_at_between="2000-01-01T00:00:00Z|2999-01-01T00:00:00") == [
            100,
            250,
            400,
        ]
        assert amounts(created_at_lt="2000-01-01T00:00:00+02:00") == []
        assert amounts(reference_ilike="FLT-BANK-%") == [250]
        assert amounts(allow_overdraft_eq="true") == [100, 250, 400]
        assert amounts(allow_overdraft_eq="0") == []
        assert amounts(**{"meta_data.channel_isnotnull": ""}) == [100, 250, 400]
        assert amounts(**{"meta_data.absent_isnull": ""}) == [100, 250, 400]
        assert amounts(**{"meta_data.channel_isnull": ""}) == []
        for bad in (
            {"allow_overdraft_eq": "maybe"},
            {"precise_amount_gte": "many"},
            {"created_at_gt": "yesterday"},
            {"nonexistent_eq": "1"},
            {"precise_amount_like": "1%"},
            {"precise_amount_between": "1"},
        ):
            response = httpx.get(
                f"{ledger_url}/transactions",
                params={"destination_eq": balance_id, **bad},
                headers=UA,
                timeout=30,
            )
            assert response.status_code == 400, (bad, response.text)
            assert {"error", "errors"} & response.json().keys()  # a parse error lists them all

    def test_number_filters_on_an_integer_column_are_exact(
        self, blnk: Any, ledger_url: str
    ) -> None:
        """A balance's `version` is an integer, yet a fraction or a number past 64 bits compares
        as the number it is: 0 < 0.5, 0 != 0.5, and 10^20 is no 500."""
        balance_id = _balance(blnk, _ledger(blnk))

        def found(**params: str) -> bool:
            response = httpx.get(
                f"{ledger_url}/balances",
                params={"balance_id_eq": balance_id, **params},
                headers=UA,
                timeout=30,
            )
            assert response.status_code == 200, (params, response.text)
            return [b["balance_id"] for b in response.json()] == [balance_id]

        assert blnk.ledger_balances.get(balance_id).data["version"] == 0
        assert found(version_lt="0.5")
        assert found(version_lte="0.5")
        assert not found(version_gt="0.5")
        assert not found(version_eq="0.5")
        assert found(version_ne="0.5")
        assert not found(version_in="0.5,7")
        assert not found(version_between="0.25|0.75")
        assert found(version_between="-0.5|0.5")
        assert not found(version_gt="99999999999999999999")
        assert found(version_lt="99999999999999999999")
        assert found(version_in="0,99999999999999999999")

    def test_metadata_merge(self, blnk: Any) -> None:
        """Metadata merges into a transaction's existing keys."""
        posted = _fund(blnk, _balance(blnk, _ledger(blnk)), 5)
        merged = blnk.metadata.update(posted["transaction_id"], {"meta_data": {"note": "hello"}})
        assert merged.status == 200, merged.to_dict()
        assert merged.data["meta_data"]["note"] == "hello"
        assert blnk.transactions.get(posted["transaction_id"]).data["meta_data"]["note"] == "hello"
