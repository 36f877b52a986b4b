"""A balance belongs to an identity that exists, or to none: never to one that is not there.

Goal: every way a balance can come to name an identity (POST /balances, PUT
/balances/{id}/identity, raw SQL, and an identity's deletion racing either request) ends with
the balance naming a stored identity or nothing, and the API answers a refusal with Blnk's
400 BAL_VALIDATION_ERROR body (an unknown identity on a balance) or 409 GEN_CONFLICT (deleting
an identity that balances belong to), never a 500.

Method: the API answers are read through Blnk's own Python SDK over real HTTP. PostgreSQL's
foreign key (migration 0118) is proven by bypass tests that write rows with raw SQL. The two
races between a deletion and a balance naming the identity are played explicitly, never left
to timing: a holder transaction makes its change and keeps it uncommitted, the request under
test starts and reaches the holder's lock (or ends, which is the bug), then the holder commits.
The Python checks that run before each write are also skipped once on purpose, to show that
the foreign key's refusal reaches the client as the same 4xx.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
import pytest

from kit.db import Database, connect, dsn_with_database
from kit.migrations import MIGRATIONS_DIR, discover, migrate
from ledger import identities, identity_repository, repository, service
from ledger.errors import BalanceValidationError
from ledger.identities import IdentityIn
from ledger.models import GENERAL_LEDGER_ID, BalanceRecord
from ledger.surface_errors import IdentityInUseError
from tests.ledger.races import race

pytestmark = pytest.mark.db

IDENTITY_FK: Final = "balances_identity_id_fkey"
KEY_MIGRATION_VERSION: Final = 118  # 0118_ledger_balance_identity_fk.sql
CONNECT_TIMEOUT_S: Final = 10


def _missing_identity() -> str:
    return f"idt_{uuid.uuid4()}"


def _new_identity(client: Any) -> str:
    response = client.identity.create({"identity_type": "individual", "first_name": "Ada"})
    assert response.status == 201, response.to_dict()
    identity_id: str = response.data["identity_id"]
    return identity_id


def _new_ledger(client: Any) -> str:
    response = client.ledgers.create({"name": "owned balances"})
    assert response.status == 201, response.to_dict()
    ledger_id: str = response.data["ledger_id"]
    return ledger_id


async def _balances_in(db: Database, ledger_id: str) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM ledger.balances WHERE ledger_id = $1", ledger_id
        )
    return count


async def _stored_identity(db: Database, balance_id: str) -> str | None:
    async with db.connection() as conn:
        identity_id: str | None = await conn.fetchval(
            "SELECT identity_id FROM ledger.balances WHERE balance_id = $1", balance_id
        )
    return identity_id


def _assert_unknown_identity(response: Any, identity_id: str) -> None:
    """Blnk's standard error body: 400 BAL_VALIDATION_ERROR under `error`, naming the id."""
    assert response.status == 400, response.to_dict()
    assert response.error.code == "BAL_VALIDATION_ERROR"
    assert (
        response.data["error"] == response.error.message == f"identity {identity_id} does not exist"
    )
    assert response.data["error_detail"]["details"] == {"identity_id": identity_id}
    assert "errors" not in response.data


async def _always(*_: Any, **__: Any) -> bool:
    return True


async def _never(*_: Any, **__: Any) -> bool:
    return False


# ---------------------------------------------------------------- the race harness


async def _create_identity(db: Database) -> str:
    async with db.transaction() as conn:
        created = await identities.create_identity(
            conn, IdentityIn(first_name="Grace"), now=datetime.now(UTC)
        )
    identity_id: str = created["identity_id"]
    return identity_id


async def _create_balance(conn: asyncpg.Connection, identity_id: str | None) -> BalanceRecord:
    return await service.create_balance(
        conn,
        ledger_id=GENERAL_LEDGER_ID,
        currency="USD",
        identity_id=identity_id,
        indicator=None,
        track_fund_lineage=False,
        allocation_strategy=None,
        meta_data={},
        now=datetime.now(UTC),
    )


# ---------------------------------------------------------------- POST /balances


class TestCreate:
    async def test_an_unknown_identity_is_refused_and_nothing_written(
        self, blnk: Any, db: Database
    ) -> None:
        """A balance naming an identity that does not exist is 400 BAL_VALIDATION_ERROR; no row."""
        ledger_id, missing = _new_ledger(blnk), _missing_identity()
        response = blnk.ledger_balances.create(
            {"ledger_id": ledger_id, "currency": "USD", "identity_id": missing}
        )
        _assert_unknown_identity(response, missing)
        assert await _balances_in(db, ledger_id) == 0

    async def test_a_known_identity_is_kept(self, blnk: Any, db: Database) -> None:
        """A balance naming a stored identity is created with it, and reads back with it."""
        ledger_id, identity_id = _new_ledger(blnk), _new_identity(blnk)
        response = blnk.ledger_balances.create(
            {"ledger_id": ledger_id, "currency": "USD", "identity_id": identity_id}
        )
        assert response.status == 201, response.to_dict()
        balance_id = response.data["balance_id"]
        assert response.data["identity_id"] == identity_id
        assert blnk.ledger_balances.get(balance_id).data["identity_id"] == identity_id
        assert await _stored_identity(db, balance_id) == identity_id

    async def test_no_identity_is_stored_as_null(self, blnk: Any, db: Database) -> None:
        """An empty identity_id means no identity: shown as "" (Blnk's), stored as NULL."""
        response = blnk.ledger_balances.create(
            {"ledger_id": _new_ledger(blnk), "currency": "USD", "identity_id": ""}
        )
        assert response.status == 201, response.to_dict()
        assert response.data["identity_id"] == ""
        async with db.connection() as conn:
            stored = await conn.fetchrow(
                "SELECT identity_id FROM ledger.balances WHERE balance_id = $1",
                response.data["balance_id"],
            )
        assert stored is not None
        assert stored["identity_id"] is None

    async def test_the_foreign_key_refusal_is_the_same_400(
        self, blnk: Any, db: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the Python check skipped, PostgreSQL's refusal is still 400, never a 500."""
        monkeypatch.setattr(repository, "identity_exists", _always)
        ledger_id, missing = _new_ledger(blnk), _missing_identity()
        response = blnk.ledger_balances.create(
            {"ledger_id": ledger_id, "currency": "USD", "identity_id": missing}
        )
        _assert_unknown_identity(response, missing)
        assert await _balances_in(db, ledger_id) == 0


# ---------------------------------------------------------------- PUT /balances/{id}/identity


class TestLink:
    async def test_an_unknown_identity_is_refused_and_the_balance_kept(
        self, blnk: Any, db: Database
    ) -> None:
        """Linking a balance to an identity that does not exist is 400; its identity stays."""
        ledger_id, owner, missing = _new_ledger(blnk), _new_identity(blnk), _missing_identity()
        balance_id = blnk.ledger_balances.create(
            {"ledger_id": ledger_id, "currency": "USD", "identity_id": owner}
        ).data["balance_id"]
        response = blnk.ledger_balances.update_identity(balance_id, {"identity_id": missing})
        _assert_unknown_identity(response, missing)
        assert blnk.ledger_balances.get(balance_id).data["identity_id"] == owner
        assert await _stored_identity(db, balance_id) == owner

    def test_a_known_identity_is_linked(self, blnk: Any) -> None:
        """Linking a balance to a stored identity answers Blnk's message and moves the balance."""
        balance_id = blnk.ledger_balances.create(
            {"ledger_id": _new_ledger(blnk), "currency": "USD"}
        ).data["balance_id"]
        identity_id = _new_identity(blnk)
        response = blnk.ledger_balances.update_identity(balance_id, {"identity_id": identity_id})
        assert response.status == 200, response.to_dict()
        assert response.data == {"message": "Balance identity updated successfully"}
        assert blnk.ledger_balances.get(balance_id).data["identity_id"] == identity_id

    def test_an_unknown_balance_is_404_whatever_the_identity(self, blnk: Any) -> None:
        """The balance in the path is looked up first: unknown, it is 404 BAL_NOT_FOUND."""
        missing_balance = f"bln_{uuid.uuid4()}"
        for identity_id in (_new_identity(blnk), _missing_identity()):
            response = blnk.ledger_balances.update_identity(
                missing_balance, {"identity_id": identity_id}
            )
            assert response.status == 404, response.to_dict()
            assert response.error.code == "BAL_NOT_FOUND"

    async def test_the_foreign_key_refusal_is_the_same_400(
        self, blnk: Any, db: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the Python check skipped, PostgreSQL's refusal is still 400; nothing changes."""
        balance_id = blnk.ledger_balances.create(
            {"ledger_id": _new_ledger(blnk), "currency": "USD"}
        ).data["balance_id"]
        monkeypatch.setattr(repository, "identity_exists", _always)
        missing = _missing_identity()
        response = blnk.ledger_balances.update_identity(balance_id, {"identity_id": missing})
        _assert_unknown_identity(response, missing)
        assert await _stored_identity(db, balance_id) is None


# ---------------------------------------------------------------- PostgreSQL refuses


async def _insert_identity(conn: asyncpg.Connection) -> str:
    identity_id = _missing_identity()
    await conn.execute("INSERT INTO ledger.identities (identity_id) VALUES ($1)", identity_id)
    return identity_id


async def _insert_balance(conn: asyncpg.Connection, identity_id: str | None) -> str:
    balance_id = f"bln_{uuid.uuid4()}"
    await conn.execute(
        "INSERT INTO ledger.balances (balance_id, ledger_id, currency, identity_id)"
        " VALUES ($1, $2, 'USD', $3)",
        balance_id,
        GENERAL_LEDGER_ID,
        identity_id,
    )
    return balance_id


class TestDatabaseRefuses:
    @pytest.mark.parametrize("identity_id", [_missing_identity(), ""], ids=["unknown", "empty"])
    async def test_an_insert_naming_no_stored_identity(
        self, conn: asyncpg.Connection, identity_id: str
    ) -> None:
        """A raw INSERT of a balance naming an unknown identity (or "") is refused."""
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await _insert_balance(conn, identity_id)
        assert refused.value.constraint_name == IDENTITY_FK

    async def test_an_update_naming_no_stored_identity(self, conn: asyncpg.Connection) -> None:
        """A raw UPDATE pointing a balance at an unknown identity is refused."""
        balance_id = await _insert_balance(conn, await _insert_identity(conn))
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await conn.execute(
                "UPDATE ledger.balances SET identity_id = $2 WHERE balance_id = $1",
                balance_id,
                _missing_identity(),
            )
        assert refused.value.constraint_name == IDENTITY_FK

    async def test_deleting_an_identity_a_balance_names(self, conn: asyncpg.Connection) -> None:
        """A raw DELETE of an identity that a balance belongs to is refused."""
        identity_id = await _insert_identity(conn)
        await _insert_balance(conn, identity_id)
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await conn.execute("DELETE FROM ledger.identities WHERE identity_id = $1", identity_id)
        assert refused.value.constraint_name == IDENTITY_FK

    async def test_a_stored_identity_and_none_are_accepted(self, conn: asyncpg.Connection) -> None:
        """The key refuses nothing else: a stored identity, or NULL for none."""
        owned = await _insert_balance(conn, await _insert_identity(conn))
        unowned = await _insert_balance(conn, None)
        found = await conn.fetch(
            "SELECT balance_id FROM ledger.balances WHERE balance_id = ANY($1::text[])",
            [owned, unowned],
        )
        assert len(found) == 2


# ---------------------------------------------------------------- deletion races


class TestDeletionRaces:
    async def test_a_create_waiting_on_a_deletion_is_refused(self, db: Database) -> None:
        """A balance created for an identity being deleted (checked present, deletion not yet
        committed) waits for the deletion and is refused 400; no balance names the identity."""
        identity_id = await _create_identity(db)

        async def delete(conn: asyncpg.Connection) -> None:
            await identities.delete_identity(conn, identity_id)

        async def create(conn: asyncpg.Connection) -> BalanceRecord:
            return await _create_balance(conn, identity_id)

        result = await race(db, delete, create)
        assert isinstance(result, BalanceValidationError), result
        assert result.details == {"identity_id": identity_id}
        async with db.connection() as conn:
            named = await conn.fetchval(
                "SELECT count(*) FROM ledger.balances WHERE identity_id = $1", identity_id
            )
        assert named == 0

    async def test_a_link_waiting_on_a_deletion_is_refused(self, db: Database) -> None:
        """A balance linked to an identity being deleted waits for the deletion and is refused
        400; the balance keeps having no identity."""
        identity_id = await _create_identity(db)
        async with db.transaction() as conn:
            balance_id = (await _create_balance(conn, None)).balance_id

        async def delete(conn: asyncpg.Connection) -> None:
            await identities.delete_identity(conn, identity_id)

        async def link(conn: asyncpg.Connection) -> None:
            await service.set_balance_identity(conn, balance_id, identity_id)

        result = await race(db, delete, link)
        assert isinstance(result, BalanceValidationError), result
        assert await _stored_identity(db, balance_id) is None

    async def test_a_deletion_waiting_on_a_create_is_refused(self, db: Database) -> None:
        """An identity deleted while a balance for it is created (not yet committed) waits for
        the balance and is refused 409; the identity and its balance stay."""
        identity_id = await _create_identity(db)
        created: list[BalanceRecord] = []

        async def create(conn: asyncpg.Connection) -> None:
            created.append(await _create_balance(conn, identity_id))

        async def delete(conn: asyncpg.Connection) -> None:
            await identities.delete_identity(conn, identity_id)

        result = await race(db, create, delete)
        assert isinstance(result, IdentityInUseError), result
        assert result.status == 409
        async with db.connection() as conn:
            assert await identity_repository.find_identity(conn, identity_id) is not None
        assert await _stored_identity(db, created[0].balance_id) == identity_id

    async def test_a_deletion_that_missed_the_balances_is_refused_by_the_key(
        self, db: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the Python check skipped, PostgreSQL's refusal of the deletion is the same 409."""
        identity_id = await _create_identity(db)
        async with db.transaction() as conn:
            await _create_balance(conn, identity_id)
        monkeypatch.setattr(identity_repository, "identity_has_balances", _never)
        with pytest.raises(IdentityInUseError):
            async with db.transaction() as conn:
                await identities.delete_identity(conn, identity_id)
        async with db.connection() as conn:
            assert await identity_repository.find_identity(conn, identity_id) is not None

    def test_deleting_an_identity_with_a_balance_is_409_over_http(self, blnk: Any) -> None:
        """Through the SDK: an identity a balance belongs to is not deleted (409 GEN_CONFLICT)."""
        identity_id = _new_identity(blnk)
        blnk.ledger_balances.create(
            {"ledger_id": _new_ledger(blnk), "currency": "USD", "identity_id": identity_id}
        )
        refused = blnk.identity.delete(identity_id)
        assert refused.status == 409, refused.to_dict()
        assert refused.error.code == "GEN_CONFLICT"
        assert blnk.identity.get(identity_id).status == 200


# ---------------------------------------------------------------- rows from before the key


class TestMigrationRepair:
    async def test_rows_from_before_the_key_are_repaired_and_kept(
        self, servers: tuple[str, str], tmp_path: Path
    ) -> None:
        """On a database migrated up to 0117, a balance naming "" becomes NULL, one naming a
        lost identity becomes NULL with the lost id kept in balance_identity_repairs, and
        one naming a stored identity keeps it; then the key holds."""
        for file in discover():
            if file.version < KEY_MIGRATION_VERSION:
                shutil.copy(MIGRATIONS_DIR / f"{file.name}.sql", tmp_path)
        admin_dsn, _ = servers
        name = f"dwaybank_test_{uuid.uuid4().hex[:12]}"
        admin = await connect(admin_dsn, timeout_s=CONNECT_TIMEOUT_S)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            conn = await connect(dsn_with_database(admin_dsn, name), timeout_s=CONNECT_TIMEOUT_S)
            try:
                await migrate(conn, tmp_path)
                owner, lost = await _insert_identity(conn), _missing_identity()
                named = {key: await _insert_balance(conn, key) for key in (owner, "", lost)}
                unowned = await _insert_balance(conn, None)
                await migrate(conn)
                stored: dict[str, str | None] = {
                    row["balance_id"]: row["identity_id"]
                    for row in await conn.fetch(
                        "SELECT balance_id, identity_id FROM ledger.balances"
                    )
                }
                repairs = [
                    tuple(row)
                    for row in await conn.fetch(
                        "SELECT balance_id, identity_id FROM ledger.balance_identity_repairs"
                    )
                ]
                with pytest.raises(asyncpg.ForeignKeyViolationError):
                    await _insert_balance(conn, lost)
            finally:
                await conn.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
        assert stored[named[owner]] == owner
        assert stored[named[""]] is None
        assert stored[named[lost]] is None
        assert stored[unowned] is None
        assert repairs == [(named[lost], lost)]
