"""The `dwaybank` command.

    dwaybank up                 start everything (embedded servers unless URLs are set)
    dwaybank down               stop a running `dwaybank up` on the same data folder
    dwaybank migrate            apply pending migrations
    dwaybank migrate --status   show each migration's state, change nothing

Any expected failure prints one line, `dwaybank: error: ...`, and exits non-zero; secrets in
URLs are masked.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

from pydantic import ValidationError as SettingsValidationError

from deployments.runtime import (
    Runtime,
    apply_migrations,
    migration_status,
    request_down,
    resolve_servers,
)
from kit.errors import AppError
from kit.migrations import MigrationState
from kit.settings import Settings

EXIT_ERROR = 1
EXIT_USAGE = 2


class CommandGroup(Protocol):
    """A module that adds subcommands (`dwaybank keys ...`, `dwaybank ledger ...`)."""

    def register(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Add this group's subparsers."""

    def run(self, args: argparse.Namespace, settings: Settings) -> int | None:
        """Run the command if it is this group's; None when it is not."""


# Domain command groups, each a module with `register` and `run` (see CommandGroup).
COMMAND_GROUPS: tuple[str, ...] = ("deployments.auth_commands", "deployments.ledger_commands")


def _groups() -> list[CommandGroup]:
    return [cast(CommandGroup, importlib.import_module(name)) for name in COMMAND_GROUPS]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dwaybank", description="DwayBank foundation layer")
    parser.add_argument(
        "--data-dir", type=Path, help="data folder (default: DWAYBANK_DATA_DIR or ./.dwaybank)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start everything and wait for Ctrl-C")
    commands.add_parser("down", help="stop a running `dwaybank up`")
    migrate = commands.add_parser("migrate", help="apply pending migrations")
    migrate.add_argument("--status", action="store_true", help="report, change nothing")
    for group in _groups():
        group.register(commands)
    return parser


def _settings(data_dir: Path | None) -> Settings:
    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


def _up(settings: Settings) -> int:
    runtime = Runtime(settings)
    runtime.install_signal_handlers()
    try:
        for line in runtime.start():
            print(line, flush=True)
        runtime.wait()
        print("Stopping...", flush=True)
    finally:
        runtime.stop()
    print("Stopped.", flush=True)
    return 0


def _down(settings: Settings) -> int:
    pid = request_down(settings)
    print("dwaybank was not running." if pid is None else f"Stopped dwaybank (pid {pid}).")
    return 0


def _migrate(settings: Settings, *, report_only: bool) -> int:
    servers = resolve_servers(settings, with_redis=False)
    try:
        if report_only:
            report = asyncio.run(migration_status(servers.database_url))
            for line in report:
                when = f"  {line.applied_at}" if line.applied_at else ""
                print(f"{line.version:04d}  {line.state.value:<8} {line.name}{when}")
            refused = {MigrationState.CHANGED, MigrationState.MISSING}
            return EXIT_ERROR if any(line.state in refused for line in report) else 0
        applied = asyncio.run(apply_migrations(servers.database_url))
        for file in applied:
            print(f"applied {file.name}")
        print(f"{len(applied)} migrations applied.")
        return 0
    finally:
        servers.stop_started()


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "up":
        return _up(settings)
    if args.command == "down":
        return _down(settings)
    if args.command == "migrate":
        return _migrate(settings, report_only=args.status)
    for group in _groups():
        code = group.run(args, settings)
        if code is not None:
            return code
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dwaybank` console script."""
    # pgserver asks platformdirs for a runtime folder; containers often lack XDG_RUNTIME_DIR.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args, _settings(args.data_dir))
    except SettingsValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        print(f"dwaybank: error: setting {where}: {first['msg']}", file=sys.stderr)
        return EXIT_USAGE
    except AppError as exc:
        print(f"dwaybank: error: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
