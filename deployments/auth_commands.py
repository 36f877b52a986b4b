"""Identity commands of the `dwaybank` CLI.

    dwaybank keys rotate [--force]   publish a new next key; activate the published one
    dwaybank keys list               every signing key and its state
    dwaybank outbox [--to ADDRESS]   messages the local SMS/email provider recorded
    dwaybank oauth-client add NAME --redirect-uri URI [--scope S ...] [--public] [--first-party]
    dwaybank admin grant EMAIL       make a user an administrator (and `revoke`)

Each runs against `DATABASE_URL` (or the embedded PostgreSQL of the data folder) and prints
one line per item; secrets (a client secret) are printed once, when created.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import asyncpg

from auth.assembly import key_timings
from auth.constants import OUTBOX_PAGE_MAX
from auth.keys import list_keys, rotate_keys
from auth.repository import outbox as outbox_repository
from auth.service.oauth import register_client
from deployments.runtime import PREFLIGHT_TIMEOUT_S, resolve_servers
from kit.clock import SystemClock
from kit.crypto import EnvelopeCipher, load_keyring
from kit.db import audit_context, connect
from kit.errors import ValidationError
from kit.settings import Settings
from users import service as users
from users.models import Role

T = TypeVar("T")
EXIT_OK: Final = 0
DEFAULT_SCOPES: Final = ("openid", "profile", "email")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keys`, `outbox`, `oauth-client` and `admin`."""
    keys = commands.add_parser("keys", help="token signing keys")
    key_actions = keys.add_subparsers(dest="keys_action", required=True)
    rotate = key_actions.add_parser("rotate", help="rotate the signing keys")
    rotate.add_argument("--force", action="store_true", help="activate the next key even if new")
    key_actions.add_parser("list", help="list the signing keys")

    outbox = commands.add_parser("outbox", help="messages of the local SMS/email provider")
    outbox.add_argument("--to", help="only messages to this number or address")
    outbox.add_argument("--limit", type=int, default=20, help=f"at most {OUTBOX_PAGE_MAX}")

    client = commands.add_parser("oauth-client", help="OAuth clients")
    client_actions = client.add_subparsers(dest="client_action", required=True)
    add = client_actions.add_parser("add", help="register a client")
    add.add_argument("name")
    add.add_argument("--redirect-uri", action="append", required=True)
    add.add_argument("--scope", action="append")
    add.add_argument("--public", action="store_true", help="no secret (a mobile or SPA client)")
    add.add_argument("--first-party", action="store_true")

    admin = commands.add_parser("admin", help="administrators")
    admin.add_argument("admin_action", choices=["grant", "revoke"])
    admin.add_argument("email")


def _with_connection(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    servers = resolve_servers(settings, with_redis=False)

    async def main() -> T:
        conn = await connect(servers.database_url, timeout_s=PREFLIGHT_TIMEOUT_S)
        try:
            async with conn.transaction():
                await audit_context(conn, actor_id=None, user_agent="dwaybank-cli")
                return await work(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(main())
    finally:
        servers.stop_started()


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    cipher = EnvelopeCipher(load_keyring(settings))

    async def work(conn: asyncpg.Connection) -> list[str]:
        if args.keys_action == "rotate":
            result = await rotate_keys(
                conn,
                cipher=cipher,
                now=SystemClock().now(),
                timings=key_timings(settings),
                is_forced=args.force,
            )
            return [
                f"activated {result.activated or '-'}",
                f"retired   {result.retired or '-'}",
                f"published {result.published_next} (next)",
            ]
        return [
            f"{k['kid']}  {k['status']:<7}  created {k['created_at']:%Y-%m-%d %H:%M:%S}"
            + (
                f"  published until {k['published_until']:%Y-%m-%d %H:%M:%S}"
                if k["published_until"]
                else ""
            )
            for k in await list_keys(conn)
        ]

    for line in _with_connection(settings, work):
        _say(line)
    return EXIT_OK


def _outbox(args: argparse.Namespace, settings: Settings) -> int:
    limit = max(1, min(args.limit, OUTBOX_PAGE_MAX))

    async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return await outbox_repository.list_messages(conn, recipient=args.to, limit=limit)

    for row in _with_connection(settings, work):
        subject = f" [{row['subject']}]" if row["subject"] else ""
        when = f"{row['created_at']:%Y-%m-%d %H:%M:%S}"
        _say(f"{when}  {row['channel']:<5} {row['recipient']}{subject}: {row['body']}")
    return EXIT_OK


def _oauth_client(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> list[str]:
        registered = await register_client(
            conn,
            name=args.name,
            redirect_uris=args.redirect_uri,
            scopes=args.scope or list(DEFAULT_SCOPES),
            is_confidential=not args.public,
            is_first_party=args.first_party,
            admin_id=None,
        )
        lines = [f"client_id     {registered.client_id}"]
        if registered.client_secret:
            lines.append(f"client_secret {registered.client_secret}  (shown once)")
        return lines

    for line in _with_connection(settings, work):
        _say(line)
    return EXIT_OK


def _admin(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: asyncpg.Connection) -> str:
        user = await users.find_by_email(conn, users.normalise_email(args.email))
        if user is None:
            raise ValidationError("no user has that email address")
        role = Role.ADMIN if args.admin_action == "grant" else Role.USER
        await users.set_role(conn, user.id, role)
        return f"{user.email} is now {role.value}"

    _say(_with_connection(settings, work))
    return EXIT_OK


def run(args: argparse.Namespace, settings: Settings) -> int | None:
    """Run the command if it is one of ours."""
    handlers: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
        "keys": _keys,
        "outbox": _outbox,
        "oauth-client": _oauth_client,
        "admin": _admin,
    }
    handler = handlers.get(args.command)
    return None if handler is None else handler(args, settings)
