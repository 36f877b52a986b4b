"""User records: normalisation, creation, roles and tiers, and the database's own guards.

Rejections are proved by writing bad rows with raw SQL inside savepoints: the CHECKs of
migration 0200 must refuse them whatever the Python code does. Row-level security of the
identity tables is proved by switching to the user role with `kit.db.acting_for`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from kit.db import acting_for
from users import service as users
from users.errors import EmailTakenError, InvalidEmailError, InvalidPhoneError
from users.models import KycStatus, Role, Tier


class TestNormalisation:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("Alice@Example.COM", "alice@example.com"),
            ("  bob@example.com ", "bob@example.com"),
            ("Zoë@exämple.de", "zoë@exämple.de"),
        ],
    )
    def test_emails_are_canonical(self, raw: str, expected: str) -> None:
        """Case and surrounding space never make two accounts."""
        assert users.normalise_email(raw) == expected

    @pytest.mark.parametrize(
        "raw", ["no-at-sign", "a@", "@example.com", "a@b@c.com", "x" * 300 + "@e.com"]
    )
    def test_invalid_emails_are_refused(self, raw: str) -> None:
        """Anything that is not an address is a USER_INVALID_EMAIL."""
        with pytest.raises(InvalidEmailError):
            users.normalise_email(raw)

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [("+1 (415) 555-0123", "+14155550123"), ("+44 20 7946 0958", "+442079460958")],
    )
    def test_phones_are_e164(self, raw: str, expected: str) -> None:
        """International numbers are stored as E.164."""
        assert users.normalise_phone(raw) == expected

    @pytest.mark.parametrize("raw", ["4155550123", "+1 555", "phone", "+" + "1" * 40])
    def test_invalid_phones_are_refused(self, raw: str) -> None:
        """A number without country code, too short, or not a number is refused."""
        with pytest.raises(InvalidPhoneError):
            users.normalise_phone(raw)


@pytest.mark.db
class TestRecords:
    async def test_new_users_are_inactive_basic_users(self, conn: asyncpg.Connection) -> None:
        """A created user waits for verification with role user, tier basic, KYC pending."""
        user = await users.create_user(
            conn, email=f"{uuid.uuid4().hex}@example.com", password_hash="h", phone_number=None
        )
        assert (user.role, user.tier, user.kyc_status) == (Role.USER, Tier.BASIC, KycStatus.PENDING)
        assert not user.is_active
        assert not user.is_verified
        await users.mark_email_verified(conn, user.id, datetime.now(UTC))
        assert (await users.get_user(conn, user.id)).is_active

    async def test_one_account_per_email(self, conn: asyncpg.Connection) -> None:
        """A second user with the same address is EmailTakenError; the transaction survives."""
        email = f"{uuid.uuid4().hex}@example.com"
        await users.create_user(conn, email=email, password_hash="h", phone_number=None)
        with pytest.raises(EmailTakenError):
            await users.create_user(conn, email=email, password_hash="h", phone_number=None)
        assert await users.find_by_email(conn, email) is not None

    @pytest.mark.parametrize(("column", "value"), [("role", "root"), ("tier", "gold")])
    async def test_role_and_tier_are_checked(
        self, conn: asyncpg.Connection, column: str, value: str
    ) -> None:
        """PostgreSQL refuses a role or tier outside the contract."""
        user = await users.create_user(
            conn, email=f"{uuid.uuid4().hex}@example.com", password_hash="h", phone_number=None
        )
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():
                await conn.execute(f"UPDATE users SET {column} = $2 WHERE id = $1", user.id, value)

    async def test_admin_role_can_be_granted(self, conn: asyncpg.Connection) -> None:
        """set_role makes an administrator."""
        user = await users.create_user(
            conn, email=f"{uuid.uuid4().hex}@example.com", password_hash="h", phone_number=None
        )
        await users.set_role(conn, user.id, Role.ADMIN)
        assert (await users.get_user(conn, user.id)).role is Role.ADMIN


@pytest.mark.db
class TestIdentityTablesUnderRls:
    async def test_a_user_sees_only_their_refresh_families_and_codes(
        self, conn: asyncpg.Connection
    ) -> None:
        """Acting for A, B's refresh families, codes and credentials are invisible."""
        ids = []
        for _ in range(2):
            user = await users.create_user(
                conn, email=f"{uuid.uuid4().hex}@example.com", password_hash="h", phone_number=None
            )
            now = datetime.now(UTC)
            await conn.execute(
                "INSERT INTO auth_refresh_families (user_id, session_id, scope, amr, acr,"
                " auth_time, expires_at) VALUES ($1, 'ses_x', 'openid', '{pwd}', 'aal1', $2, $3)",
                user.id,
                now,
                now + timedelta(hours=1),
            )
            await conn.execute(
                "INSERT INTO auth_codes (user_id, purpose, code_hash, attempts_max, expires_at)"
                " VALUES ($1, 'verify_email', $2, 5, now() + interval '5 minutes')",
                user.id,
                b"\x00" * 32,
            )
            ids.append(user.id)
        async with conn.transaction():
            await acting_for(conn, user_id=ids[0])
            families = await conn.fetch(
                "SELECT user_id FROM auth_refresh_families WHERE user_id = ANY($1::uuid[])", ids
            )
            codes = await conn.fetch(
                "SELECT user_id FROM auth_codes WHERE user_id = ANY($1::uuid[])", ids
            )
            assert {r["user_id"] for r in families} == {ids[0]}
            assert {r["user_id"] for r in codes} == {ids[0]}
            await conn.execute("RESET ROLE")

    async def test_codes_live_at_most_ten_minutes(self, conn: asyncpg.Connection) -> None:
        """A code row valid for longer than 10 minutes is refused by PostgreSQL."""
        user = await users.create_user(
            conn, email=f"{uuid.uuid4().hex}@example.com", password_hash="h", phone_number=None
        )
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO auth_codes (user_id, purpose, code_hash, attempts_max, expires_at)"
                    " VALUES ($1, 'verify_email', $2, 5, now() + interval '11 minutes')",
                    user.id,
                    b"\x00" * 32,
                )

    async def test_a_token_has_at_most_one_child(self, conn: asyncpg.Connection) -> None:
        """The unique index on parent_id refuses a second child, bypassing Python."""
        user = await users.create_user(
            conn, email=f"{uuid.uuid4().hex}@example.com", password_hash="h", phone_number=None
        )
        family = await conn.fetchval(
            "INSERT INTO auth_refresh_families (user_id, session_id, scope, amr, acr, auth_time,"
            " expires_at) VALUES ($1, 'ses_x', 'openid', '{pwd}', 'aal1', now(),"
            " now() + interval '1 hour')"
            " RETURNING id",
            user.id,
        )
        insert = (
            "INSERT INTO auth_refresh_tokens (family_id, user_id, token_hash, parent_id,"
            " expires_at) VALUES ($1, $2, $3, $4, now() + interval '1 hour') RETURNING id"
        )
        parent = await conn.fetchval(insert, family, user.id, b"\x01" * 32, None)
        await conn.fetchval(insert, family, user.id, b"\x02" * 32, parent)
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await conn.fetchval(insert, family, user.id, b"\x03" * 32, parent)

    async def test_one_active_signing_key(self, conn: asyncpg.Connection) -> None:
        """A second active key is refused by the partial unique index."""
        insert = (
            "INSERT INTO auth_signing_keys (kid, status, public_jwk, private_key, activated_at)"
            " VALUES ($1, 'active', $2, 'sealed', now())"
        )
        await conn.execute("DELETE FROM auth_signing_keys")  # rolled back with the test
        await conn.execute(insert, "first", {"kty": "RSA"})
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await conn.execute(insert, "second", {"kty": "RSA"})
