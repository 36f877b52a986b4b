"""Short-lived state in Redis: MFA challenges (the `mfa_token`) and TOTP replay guards.

A challenge is created when a password login (or a step-up) needs a second factor. Its token
is 256 random bits handed to the client; Redis holds only a hash of it, under
`mfa-challenge:<sha256>` with a TTL of `MFA_CHALLENGE_TTL_S`, as a hash whose `attempts` and
`sends` counters are incremented atomically (HINCRBY), so parallel guesses cannot exceed
`MFA_CHALLENGE_ATTEMPTS_MAX`. A challenge is consumed by deleting it; only the request whose
DEL removed it may finish the login, so one challenge yields at most one session. Counting a
guess or a send and attaching a code touch a challenge only while it exists (a Lua script that
checks first): a plain HINCRBY or HSET on a challenge another request had just consumed would
write a new one, without TTL or owner, that a second DEL would then "consume" again.

A login challenge is bound to the password hash it was issued against (`password_binding`, an
HMAC under the code pepper, so Redis never holds the hash): a password reset or change writes a
new hash, and every login challenge issued before it no longer matches, so it ends with the
sessions, including one whose password was checked just before the new hash was written.

TOTP replay: the last accepted time step per user is kept under `totp-step:<user id>` and
advanced by a Lua compare-and-set, so a code (or any code of an earlier step) is accepted once.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Final

import redis.asyncio as aioredis

from auth.constants import MFA_CHALLENGE_ATTEMPTS_MAX, MFA_CHALLENGE_TTL_S, TOTP_STEP_S
from auth.otp import code_digest
from kit.redis_client import KeySpace, translated

CHALLENGE_TOKEN_BYTES: Final = 32
CHALLENGE_TOKEN_LENGTH_MAX: Final = 128
TOTP_REPLAY_TTL_S: Final = 4 * TOTP_STEP_S  # longer than the window of any acceptable code
_ADVANCE_STEP: Final = """
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
# Increment a counter of a challenge that still exists: -1 when it is gone. Past ARGV[2] the
# challenge is deleted in the same step (its guesses ran out).
_COUNT_IF_LIVE: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local count = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if count > tonumber(ARGV[2]) then redis.call('DEL', KEYS[1]) end
return count
"""
# Set a field of a challenge that still exists: 0 when it is gone.
_SET_IF_LIVE: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
_COUNT_UNBOUNDED: Final = 2**62  # a counter that never deletes its challenge (sends)


class Attempt(Enum):
    """What counting one guess at a challenge found."""

    COUNTED = "counted"  # the guess may be checked
    EXHAUSTED = "exhausted"  # the guesses ran out: the challenge is gone now
    GONE = "gone"  # already consumed or expired (by another request, say)


@dataclass(frozen=True, slots=True)
class Challenge:
    """A pending second-factor verification."""

    digest: str
    user_id: uuid.UUID
    methods: tuple[str, ...]
    replaces_session: str | None  # set for a step-up: the session it upgrades
    password_binding: str | None  # set for a login: see `password_binding`
    sms_code: str | None  # HMAC hex of the last code sent by SMS
    email_code: str | None
    webauthn_challenge: str | None  # base64url


def password_binding(pepper: bytes, user_id: uuid.UUID, password_hash: str) -> str:
    """What a login challenge keeps of the password hash it was issued against."""
    return code_digest(
        pepper, purpose="challenge_password", subject=str(user_id), code=password_hash
    ).hex()


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


class ChallengeStore:
    """MFA challenges and the TOTP replay guard."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace) -> None:
        self._redis = client
        self._keys = keys

    def _key(self, digest: str) -> str:
        return self._keys.key("mfa-challenge", digest)

    async def create(
        self,
        *,
        user_id: uuid.UUID,
        methods: tuple[str, ...],
        replaces_session: str | None,
        password_binding: str | None = None,
    ) -> str:
        """A new challenge; its token (shown once, to the client)."""
        token = secrets.token_urlsafe(CHALLENGE_TOKEN_BYTES)
        mapping = {
            "user_id": str(user_id),
            "methods": " ".join(methods),
            "attempts": "0",
            "sends": "0",
            "replaces_session": replaces_session or "",
            "password_binding": password_binding or "",
        }
        key = self._key(hashlib.sha256(token.encode()).hexdigest())
        async with translated(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, items=[part for pair in mapping.items() for part in pair])
            pipe.expire(key, MFA_CHALLENGE_TTL_S)
            await pipe.execute()
        return token

    async def find(self, token: str) -> Challenge | None:
        """The live challenge of a token."""
        if not token or len(token) > CHALLENGE_TOKEN_LENGTH_MAX:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        async with translated():
            data = await self._redis.hgetall(self._key(digest))
        if not data:
            return None
        fields = {_text(k): _text(v) for k, v in data.items()}
        if not fields.get("user_id"):
            return None  # not a challenge this store wrote (a counter left without its owner)
        return Challenge(
            digest=digest,
            user_id=uuid.UUID(fields["user_id"]),
            methods=tuple((fields.get("methods") or "").split()),
            replaces_session=fields.get("replaces_session") or None,
            password_binding=fields.get("password_binding") or None,
            sms_code=fields.get("sms_code"),
            email_code=fields.get("email_code"),
            webauthn_challenge=fields.get("webauthn"),
        )

    async def _count_if_live(self, challenge: Challenge, counter: str, ceiling: int) -> int:
        """Add one to a counter of the challenge while it exists (deleting it past `ceiling`);
        the new count, or -1 when the challenge is gone."""
        async with translated():
            return int(
                await self._redis.eval(
                    _COUNT_IF_LIVE, 1, self._key(challenge.digest), counter, str(ceiling)
                )
            )

    async def count_attempt(self, challenge: Challenge) -> Attempt:
        """Spend one guess, while the challenge lasts; once they run out it is gone."""
        count = await self._count_if_live(challenge, "attempts", MFA_CHALLENGE_ATTEMPTS_MAX)
        if count < 0:
            return Attempt.GONE
        return Attempt.EXHAUSTED if count > MFA_CHALLENGE_ATTEMPTS_MAX else Attempt.COUNTED

    async def count_send(self, challenge: Challenge) -> int | None:
        """Sends so far, this one included; None when the challenge is gone."""
        count = await self._count_if_live(challenge, "sends", _COUNT_UNBOUNDED)
        return None if count < 0 else count

    async def remember(self, challenge: Challenge, field: str, value: str) -> bool:
        """Attach a code hash or a WebAuthn challenge (keeps the TTL); False when the
        challenge is gone."""
        async with translated():
            done = await self._redis.eval(
                _SET_IF_LIVE, 1, self._key(challenge.digest), field, value
            )
        return int(done) == 1

    async def consume(self, challenge: Challenge) -> bool:
        """End the challenge; True only for the one caller that ended it."""
        async with translated():
            return int(await self._redis.delete(self._key(challenge.digest))) == 1

    async def advance_totp_step(self, user_id: uuid.UUID, step: int) -> bool:
        """Accept `step` for the user once; False for a replay or an older step."""
        key = self._keys.key("totp-step", str(user_id))
        async with translated():
            result = await self._redis.eval(
                _ADVANCE_STEP, 1, key, str(step), str(TOTP_REPLAY_TTL_S)
            )
        return int(result) == 1

    async def remember_webauthn(self, user_id: uuid.UUID, challenge: bytes, ttl_s: int) -> None:
        """Keep a registration challenge for the user."""
        key = self._keys.key("webauthn-registration", str(user_id))
        async with translated():
            await self._redis.set(key, challenge.hex(), ex=ttl_s)

    async def take_webauthn(self, user_id: uuid.UUID) -> bytes | None:
        """The user's registration challenge, removed (single use)."""
        key = self._keys.key("webauthn-registration", str(user_id))
        async with translated():
            value = await self._redis.getdel(key)
        text = _text(value)
        return None if text is None else bytes.fromhex(text)
