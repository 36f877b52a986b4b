"""User sessions: Redis with an idle TTL (the seed's UserSession), mirrored in user_sessions.

A session is born at login (and again at step-up: a new id every time the user proves more),
lives in Redis under `session:<sid>` with a TTL of `auth_session_idle_s` that each refresh
extends, and dies at logout, revocation, password change or idle expiry. A user's sessions are
indexed in the sorted set `user-sessions:<user id>` (score: creation time), bounded to
`SESSIONS_LISTED_MAX` (the oldest is ended beyond it, with its refresh families and an audit
event, in the transaction that opens the new session). The session id is `ses_<uuid4>`; its
uuid is the primary key of the mirror row in user_sessions, whose `session_token` holds a
SHA-256 of the id, never the id itself. Redis is the authority for "is this session alive";
PostgreSQL keeps the audit trail of when it lived and from where.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg
import orjson
import redis.asyncio as aioredis

from auth import refresh as refresh_tokens
from auth.audit import record_event
from auth.constants import SESSIONS_LISTED_MAX
from auth.models import AuthEvent, RevokeReason
from auth.repository import sessions as repository
from kit.clock import Clock
from kit.ids import IdPrefix, is_id, new_id, parse_id
from kit.redis_client import KeySpace, translated

# The reason, audited and written on its refresh families, of a session ended to keep its user
# within SESSIONS_LISTED_MAX.
SESSION_CAP_REASON: Final = RevokeReason.SESSION_CAP
_SESSION_KEY_PART: Final = "session"
# How many of the oldest index entries one eviction looks at: the cap and the one just added.
_EVICTION_SCAN_MAX: Final = SESSIONS_LISTED_MAX + 1
# Bring a user's index back within the cap, atomically (two logins at the cap each count what
# the other left, so together they end exactly what is needed). The index also holds sessions
# Redis has expired since: among the oldest ARGV[3] entries, forget the ended ones and end the
# oldest live ones, until the index holds no more than ARGV[2]. KEYS[1]: the index; ARGV[1]:
# the prefix of a session key. Returns the ids of the sessions it ended.
_EVICT_BEYOND_CAP: Final = """
local count = redis.call('ZCARD', KEYS[1])
local cap = tonumber(ARGV[2])
local ended = {}
if count <= cap then return ended end
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)) do
  if count <= cap then break end
  if redis.call('DEL', ARGV[1] .. id) == 1 then table.insert(ended, id) end
  redis.call('ZREM', KEYS[1], id)
  count = count - 1
end
return ended
"""


@dataclass(frozen=True, slots=True)
class Session:
    """One live session (the seed's UserSession plus what step-up needs)."""

    session_id: str
    user_id: str
    ip_address: str | None
    user_agent: str | None
    created_at: datetime
    expires_at: datetime
    amr: tuple[str, ...]
    auth_time: datetime
    client_id: str | None = None

    def to_json(self) -> bytes:
        """The Redis value."""
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Session:
        """Parse a Redis value."""
        data: dict[str, Any] = orjson.loads(raw)
        return cls(
            session_id=data["session_id"],
            user_id=data["user_id"],
            ip_address=data["ip_address"],
            user_agent=data["user_agent"],
            created_at=datetime.fromisoformat(data["created_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            amr=tuple(data["amr"]),
            auth_time=datetime.fromisoformat(data["auth_time"]),
            client_id=data.get("client_id"),
        )


def _valid_ip(ip: str | None) -> str | None:
    if ip is None:
        return None
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return None


def session_digest(session_id: str) -> str:
    """What user_sessions.session_token stores: SHA-256 hex of the id."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Sessions in Redis, mirrored in PostgreSQL."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        *,
        idle_ttl_s: int,
        index_ttl_s: int,
        clock: Clock,
    ) -> None:
        self._redis = client
        self._keys = keys
        self.idle_ttl_s = idle_ttl_s
        self._index_ttl_s = index_ttl_s
        self._clock = clock

    def _key(self, session_id: str) -> str:
        return self._keys.key(_SESSION_KEY_PART, session_id)

    def _key_prefix(self) -> str:
        # What `_key` puts before the id (KeySpace joins parts with ':').
        return f"{self._keys.prefix}{_SESSION_KEY_PART}:"

    def _index(self, user_id: str) -> str:
        return self._keys.key("user-sessions", user_id)

    async def create(
        self,
        conn: asyncpg.Connection,
        *,
        user_id: uuid.UUID,
        ip: str | None,
        user_agent: str | None,
        amr: tuple[str, ...],
        auth_time: datetime,
        client_id: str | None = None,
    ) -> Session:
        """A new session with a fresh id."""
        now = self._clock.now()
        session = Session(
            session_id=new_id(IdPrefix.SESSION),
            user_id=str(user_id),
            ip_address=_valid_ip(ip),
            user_agent=user_agent,
            created_at=now,
            expires_at=now + timedelta(seconds=self.idle_ttl_s),
            amr=amr,
            auth_time=auth_time,
            client_id=client_id,
        )
        await repository.insert_session(
            conn,
            session_uuid=parse_id(session.session_id, IdPrefix.SESSION),
            user_id=user_id,
            token_digest=session_digest(session.session_id),
            ip=session.ip_address,
            user_agent=user_agent,
            expires_at=session.expires_at,
            created_at=now,
        )
        index = self._index(session.user_id)
        async with translated(), self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(session.session_id), session.to_json(), ex=self.idle_ttl_s)
            pipe.zadd(index, {session.session_id: now.timestamp()})
            pipe.expire(index, self._index_ttl_s)
            pipe.zcard(index)
            results = await pipe.execute()
        if int(results[-1]) > SESSIONS_LISTED_MAX:
            await self._evict_oldest(conn, session.user_id)
        return session

    async def get(self, session_id: str) -> Session | None:
        """The live session with this id."""
        if not is_id(session_id, IdPrefix.SESSION):
            return None
        async with translated():
            raw = await self._redis.get(self._key(session_id))
        return None if raw is None else Session.from_json(raw)

    async def get_owned(self, session_id: str, user_id: str) -> Session | None:
        """The live session with this id, if it is `user_id`'s (a token's `sid` and `sub`)."""
        session = await self.get(session_id)
        return session if session is not None and session.user_id == user_id else None

    async def touch(self, conn: asyncpg.Connection, session_id: str) -> Session | None:
        """Extend a live session's idle TTL; None when it has ended."""
        session = await self.get(session_id)
        if session is None:
            return None
        now = self._clock.now()
        renewed = Session(
            **{**asdict(session), "expires_at": now + timedelta(seconds=self.idle_ttl_s)}
        )
        async with translated():
            is_set = await self._redis.set(
                self._key(session_id), renewed.to_json(), ex=self.idle_ttl_s, xx=True
            )
        if not is_set:
            return None
        await repository.extend_session(
            conn, parse_id(session_id, IdPrefix.SESSION), renewed.expires_at
        )
        return renewed

    async def list_for(self, user_id: uuid.UUID) -> list[Session]:
        """The user's live sessions, newest first."""
        index = self._index(str(user_id))
        async with translated():
            ids = [
                i.decode() if isinstance(i, bytes) else str(i)
                for i in await self._redis.zrevrange(index, 0, SESSIONS_LISTED_MAX - 1)
            ]
            values = await self._redis.mget([self._key(i) for i in ids]) if ids else []
            gone = [i for i, v in zip(ids, values, strict=True) if v is None]
            if gone:
                await self._redis.zrem(index, *gone)
        return [Session.from_json(v) for v in values if v is not None]

    async def revoke(self, conn: asyncpg.Connection, user_id: uuid.UUID, session_id: str) -> bool:
        """End one of the user's sessions; False when it was not theirs or not alive, or when
        another ending (a logout, an administrator's end-all) ended it after it was read here:
        only the ending whose delete removed the key reports it, so one session is ended,
        counted and audited once."""
        session = await self.get(session_id)
        if session is None or session.user_id != str(user_id):
            return False
        async with translated():
            removed = await self._redis.delete(self._key(session_id))
            await self._redis.zrem(self._index(str(user_id)), session_id)
        if not removed:
            return False
        await repository.end_session(conn, parse_id(session_id, IdPrefix.SESSION))
        return True

    async def revoke_all(
        self, conn: asyncpg.Connection, user_id: uuid.UUID, *, except_session: str | None = None
    ) -> list[str]:
        """End every session of the user but `except_session`; the ids this call ended."""
        return [
            s.session_id
            for s in await self.list_for(user_id)
            if s.session_id != except_session and await self.revoke(conn, user_id, s.session_id)
        ]

    async def _evict_oldest(self, conn: asyncpg.Connection, user_id: str) -> None:
        # Redis ends the sessions beyond the cap in one script, counting the index as it is
        # then (not as this login's pipeline saw it: another login may have evicted since);
        # each ended one is then ended here too: its mirror row, its refresh tokens (now, not
        # at their next use), and an audit event like any other ending.
        async with translated():
            ended = await self._redis.eval(
                _EVICT_BEYOND_CAP,
                1,
                self._index(user_id),
                self._key_prefix(),
                str(SESSIONS_LISTED_MAX),
                str(_EVICTION_SCAN_MAX),
            )
        owner = uuid.UUID(user_id)
        for raw in ended:
            session_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            await repository.end_session(conn, parse_id(session_id, IdPrefix.SESSION))
            await refresh_tokens.revoke_session(
                conn, session_id, reason=SESSION_CAP_REASON, now=self._clock.now()
            )
            await record_event(
                conn,
                AuthEvent.SESSION_REVOKED,
                user_id=owner,
                session_id=session_id,
                reason=SESSION_CAP_REASON.value,
            )
