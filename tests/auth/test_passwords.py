"""Passwords: the policy's rules, the shipped blocklist, argon2id parameters and rehashing."""

from __future__ import annotations

import asyncio

import argon2
import httpx
import pytest

from auth.dependencies import AuthDependencies
from auth.errors import PasswordHasherBusyError, WeakPasswordError
from auth.passwords import HashCost, PasswordHasher, PasswordPolicy, base_word, load_blocklist
from tests.auth.conftest import PASSWORD, registered


class TestPolicy:
    def test_blocklist_is_shipped_and_large(self) -> None:
        """At least 10,000 common passwords ship with the project."""
        words = load_blocklist()
        assert len(words) >= 10_000
        assert {"password", "123456", "qwerty", "iloveyou"} <= words

    @pytest.mark.parametrize(
        ("password", "base"),
        [("P@ssw0rd2024!", "password"), ("!!Dragon99", "dragon"), ("Qwerty123$", "qwerty")],
    )
    def test_base_word_undoes_decorations(self, password: str, base: str) -> None:
        """Edges are stripped and common substitutions undone before the blocklist lookup."""
        assert base_word(password) == base

    def test_rules_can_be_switched_off(self) -> None:
        """With composition rules off, only length and the blocklist remain."""
        relaxed = PasswordPolicy(require_upper=False, require_digit=False, require_symbol=False)
        assert relaxed.check("correct horse battery staple") == "correct horse battery staple"
        with pytest.raises(WeakPasswordError) as caught:
            relaxed.check("iloveyou1234")
        assert caught.value.details["rule"] == "common_password"

    def test_nfkc_is_applied_and_nothing_is_cut(self) -> None:
        """Full-width characters fold to ASCII; a 128-character password is kept whole."""
        long_password = "Aa1!" + "x" * 124
        assert PasswordPolicy().check(long_password) == long_password
        assert PasswordPolicy().check("\uff2aoyful-Lantern-42") == "Joyful-Lantern-42"


class TestHasher:
    async def test_hashes_are_argon2id_with_the_configured_cost(self) -> None:
        """The stored form names argon2id, 19 MiB, 2 passes, 1 lane."""
        hasher = PasswordHasher(HashCost(), workers=1)
        try:
            stored = await hasher.hash(PASSWORD)
            assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
            assert await hasher.verify(stored, PASSWORD)
            assert not await hasher.verify(stored, PASSWORD + "x")
            assert not await hasher.verify("not-a-hash", PASSWORD)
        finally:
            hasher.close()

    async def test_queue_is_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Past the queue bound a hash is refused at once with a 503-class error."""
        monkeypatch.setattr("auth.passwords.PASSWORD_HASH_QUEUE_MAX", 2)
        hasher = PasswordHasher(HashCost(), workers=1)
        try:
            results = await asyncio.gather(
                *(hasher.hash(PASSWORD) for _ in range(6)), return_exceptions=True
            )
            assert any(isinstance(r, PasswordHasherBusyError) for r in results)
            assert any(isinstance(r, str) for r in results)
        finally:
            hasher.close()


@pytest.mark.db
class TestRehash:
    async def test_login_rehashes_an_old_hash(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """A hash made with other parameters is replaced by the current cost at login."""
        account = await registered(client)
        old = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
        async with deps.db.transaction() as conn:
            await conn.execute(
                "UPDATE users SET password_hash = $2 WHERE email = $1", account.email, old
            )
        response = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        assert response.status_code == 200
        async with deps.db.connection() as conn:
            stored = await conn.fetchval(
                "SELECT password_hash FROM users WHERE email = $1", account.email
            )
        assert stored != old
        assert not deps.hasher.needs_rehash(stored)
