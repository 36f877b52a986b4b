"""Passwords: the policy, the common-password blocklist, and argon2id hashing off the loop.

Policy. The seed's `password_policy`: at least 12 characters with an upper-case letter, a
lower-case letter, a digit and a symbol, and no common password; each rule can be switched by
settings, and a rejection names the rule that failed (`WeakPasswordError.details.rule`).
Passwords are normalised to Unicode NFKC, counted in code points, limited to 128, and never
truncated. A password may not contain the local part of the user's own email address.

Blocklist. `auth/data/common_passwords.txt` (19,640 entries; see the README beside it). Since
almost every listed password is shorter than our minimum, the password's base word is checked
too: `P@ssw0rd2024!` is `password` with substitutions and decorations, and is refused.

Hashing. argon2id with the cost from settings (default: OWASP's minimum profile, 19 MiB of
memory, 2 passes, 1 lane, about 17 ms on the development VM). argon2-cffi releases the GIL, so
hashes run in a dedicated thread pool of `auth_hash_workers` threads; at most
`PASSWORD_HASH_QUEUE_MAX` may wait, beyond which the caller gets a 503 rather than a queue
without end. `needs_rehash` says when a stored hash was made with other parameters, and login
rehashes it. `verify_dummy` spends the same time when there is no user, so an unknown email
costs what a wrong password costs.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Final, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from auth.constants import (
    BLOCKLIST_FILE,
    BLOCKLIST_SIZE_MIN,
    EMAIL_PART_LENGTH_MIN,
    PASSWORD_HASH_QUEUE_MAX,
    PASSWORD_LENGTH_MAX,
)
from auth.errors import PasswordHasherBusyError, WeakPasswordError
from kit.errors import check_invariant
from kit.settings import Settings

T = TypeVar("T")
DATA_DIR: Final = Path(__file__).parent / "data"
HASH_LENGTH_BYTES: Final = 32
SALT_LENGTH_BYTES: Final = 16
_LEET: Final = str.maketrans(
    {
        "0": "o",
        "1": "i",
        "3": "e",
        "4": "a",
        "5": "s",
        "7": "t",
        "@": "a",
        "$": "s",
        "!": "i",
        "|": "l",
        "+": "t",
    }
)
_DECORATION: Final = re.compile(r"^[\W\d_]+|[\W\d_]+$")


def normalise_password(password: str) -> str:
    """NFKC, as NIST SP 800-63B asks before hashing; nothing is stripped or cut."""
    return unicodedata.normalize("NFKC", password)


@cache
def load_blocklist(path: Path = DATA_DIR / BLOCKLIST_FILE) -> frozenset[str]:
    """The common passwords, lower-cased (read once, on first use)."""
    words = frozenset(
        line.strip().lower() for line in path.read_text(encoding="utf-8").splitlines()
    )
    check_invariant(len(words) >= BLOCKLIST_SIZE_MIN, "the password blocklist is too short")
    return words


def base_word(password: str) -> str:
    """The word under the decorations: lower-cased, edges stripped, substitutions undone."""
    return _DECORATION.sub("", password.lower()).translate(_LEET)


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """The rules a new password must satisfy."""

    min_length: int = 12
    require_upper: bool = True
    require_lower: bool = True
    require_digit: bool = True
    require_symbol: bool = True
    use_blocklist: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordPolicy:
        """The policy configured for this process."""
        return cls(
            min_length=settings.auth_password_min_length,
            require_upper=settings.auth_password_require_upper,
            require_lower=settings.auth_password_require_lower,
            require_digit=settings.auth_password_require_digit,
            require_symbol=settings.auth_password_require_symbol,
            use_blocklist=settings.auth_password_blocklist,
        )

    def check(self, password: str, *, email: str | None = None) -> str:
        """The normalised password, or `WeakPasswordError` naming the first rule it breaks."""
        text = normalise_password(password)
        rules: list[tuple[str, bool, str]] = [
            ("min_length", len(text) >= self.min_length, f"at least {self.min_length} characters"),
            (
                "max_length",
                len(text) <= PASSWORD_LENGTH_MAX,
                f"at most {PASSWORD_LENGTH_MAX} characters",
            ),
            (
                "uppercase",
                not self.require_upper or any(c.isupper() for c in text),
                "an upper-case letter",
            ),
            (
                "lowercase",
                not self.require_lower or any(c.islower() for c in text),
                "a lower-case letter",
            ),
            ("digit", not self.require_digit or any(c.isdigit() for c in text), "a digit"),
            ("symbol", not self.require_symbol or any(not c.isalnum() for c in text), "a symbol"),
        ]
        for rule, is_met, wants in rules:
            if not is_met:
                raise WeakPasswordError(f"the password needs {wants}", rule=rule)
        if self.use_blocklist:
            words = load_blocklist()
            if text.lower() in words or base_word(text) in words:
                raise WeakPasswordError("the password is too common", rule="common_password")
        if email is not None:
            local = email.split("@", 1)[0].lower()
            lowered = text.lower()
            if len(local) >= EMAIL_PART_LENGTH_MIN and local in lowered:
                raise WeakPasswordError("the password contains the email address", rule="email")
        return text


@dataclass(frozen=True, slots=True)
class HashCost:
    """argon2id parameters; documented in the README's Identity section."""

    memory_kib: int = 19_456
    time_cost: int = 2
    parallelism: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> HashCost:
        """The cost configured for this process."""
        return cls(
            memory_kib=settings.auth_argon2_memory_kib,
            time_cost=settings.auth_argon2_time_cost,
            parallelism=settings.auth_argon2_parallelism,
        )


class PasswordHasher:
    """argon2id in a bounded thread pool; never on the event loop."""

    def __init__(self, cost: HashCost, *, workers: int) -> None:
        self._argon = argon2.PasswordHasher(
            time_cost=cost.time_cost,
            memory_cost=cost.memory_kib,
            parallelism=cost.parallelism,
            hash_len=HASH_LENGTH_BYTES,
            salt_len=SALT_LENGTH_BYTES,
            type=argon2.Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._waiting = 0
        self._dummy_hash = self._argon.hash("dwaybank-dummy-password")

    async def _run(self, call: Callable[[], T]) -> T:
        if self._waiting >= PASSWORD_HASH_QUEUE_MAX:
            raise PasswordHasherBusyError(queue_max=PASSWORD_HASH_QUEUE_MAX)
        self._waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        finally:
            self._waiting -= 1

    async def hash(self, password: str) -> str:
        """A fresh argon2id hash of the (already normalised) password."""
        return await self._run(partial(self._argon.hash, password))

    async def verify(self, stored_hash: str, password: str) -> bool:
        """True when `password` matches; a malformed stored hash never matches."""
        try:
            await self._run(partial(self._argon.verify, stored_hash, normalise_password(password)))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return True

    async def verify_dummy(self, password: str) -> None:
        """Spend a verification's time without a user (unknown email, locked account)."""
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the stored hash used other parameters than the current cost."""
        try:
            return self._argon.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    def close(self) -> None:
        """Stop the worker threads (waits for running hashes)."""
        self._pool.shutdown(wait=True)
