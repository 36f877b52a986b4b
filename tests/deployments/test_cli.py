"""The `dwaybank` command fails fast, with one clear line, when a server is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from deployments.runtime import DataDirClaim, server_warnings
from kit.errors import ConfigurationError
from kit.settings import Settings
from tests.ports import free_port

pytestmark = pytest.mark.db

EXIT_DEADLINE_S = 10  # the acceptance bound for a bad DATABASE_URL


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    environment.update(
        DWAYBANK_DATA_DIR=str(tmp_path / "data"),
        DWAYBANK_HTTP_PORT=str(free_port()),
        DWAYBANK_DASHBOARD_PORT=str(free_port()),
        DWAYBANK_HAPROXY_METRICS_PORT=str(free_port()),
        DWAYBANK_HAPROXY_STATS_PORT=str(free_port()),
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=EXIT_DEADLINE_S,
        check=False,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("dwaybank: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


class TestBadServers:
    @pytest.mark.parametrize("command", [["migrate"], ["up"]])
    def test_refused_database_port(self, tmp_path: Path, command: list[str]) -> None:
        """A DATABASE_URL nobody listens on gives one line naming PostgreSQL and where."""
        result = _run(
            tmp_path,
            *command,
            DATABASE_URL="postgresql://app:s3cret@127.0.0.1:1/dwaybank",
            REDIS_URL="redis://127.0.0.1:1/0",
        )
        assert result.returncode != 0
        line = _one_error_line(result)
        assert "PostgreSQL" in line
        assert "127.0.0.1:1" in line
        assert "s3cret" not in result.stderr + result.stdout

    def test_unroutable_database_host(self, tmp_path: Path) -> None:
        """A host that never answers is given up on within the deadline."""
        result = _run(tmp_path, "migrate", DATABASE_URL="postgresql://app@10.255.255.1:5432/x")
        assert result.returncode != 0
        assert "PostgreSQL" in _one_error_line(result)

    def test_malformed_database_url(self, tmp_path: Path) -> None:
        """A URL that is not a PostgreSQL URL is named as such."""
        result = _run(tmp_path, "migrate", DATABASE_URL="postgresql://[::1")
        assert result.returncode != 0
        _one_error_line(result)

    def test_bad_redis_url_on_up(self, tmp_path: Path, database_dsn: str) -> None:
        """With a good database and a dead Redis, `up` names Redis and starts nothing."""
        result = _run(tmp_path, "up", DATABASE_URL=database_dsn, REDIS_URL="redis://127.0.0.1:1/0")
        assert result.returncode != 0
        assert "Redis" in _one_error_line(result)

    def test_bad_setting(self, tmp_path: Path) -> None:
        """An invalid setting is reported by name."""
        result = _run(tmp_path, "migrate", DWAYBANK_ENV="staging")
        assert result.returncode == 2
        assert "env" in _one_error_line(result)


class TestMigrateCommand:
    def test_status_reports_every_file_applied(self, tmp_path: Path, database_dsn: str) -> None:
        """On the migrated test database every shipped file shows as applied."""
        result = _run(tmp_path, "migrate", "--status", DATABASE_URL=database_dsn)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert lines
        assert all(" applied " in line for line in lines)

    def test_migrate_is_a_no_op_when_current(self, tmp_path: Path, database_dsn: str) -> None:
        """Running migrate again applies nothing."""
        result = _run(tmp_path, "migrate", DATABASE_URL=database_dsn)
        assert result.returncode == 0, result.stderr
        assert "0 migrations applied." in result.stdout


class TestServerWarnings:
    async def test_autovacuum_off_is_reported(self, conn: asyncpg.Connection) -> None:
        """`dwaybank up` warns when the server never vacuums nor analyzes (the embedded server
        runs with autovacuum on; CI's second pass uses a server with it off: both branches)."""
        warnings = await server_warnings(conn)
        is_on = await conn.fetchval("SHOW autovacuum") == "on"
        assert any("autovacuum is off" in line for line in warnings) is not is_on


class TestOneUpPerDataFolder:
    def test_a_second_up_is_refused_and_leaves_the_first_findable(self, tmp_path: Path) -> None:
        """While a process holds a data folder, `up` on it exits with one line naming that
        process, and leaves its pid file in place: `dwaybank down` still finds the first
        (the refused start used to remove the file on its way out). Released, the folder can
        be taken again."""
        settings = Settings().model_copy(update={"data_dir": tmp_path / "data"})
        first = DataDirClaim(settings)
        first.take()
        try:
            result = _run(tmp_path, "up")
            assert result.returncode != 0
            line = _one_error_line(result)
            assert "already running" in line
            assert f"(pid {os.getpid()})" in line
            assert first.path.read_text() == str(os.getpid())
            with pytest.raises(ConfigurationError, match="already running"):
                DataDirClaim(settings).take()
        finally:
            first.release()
        assert not first.path.exists()
        again = DataDirClaim(settings)
        again.take()
        assert again.is_held
        again.release()

    def test_down_ignores_a_pid_file_left_by_a_crash(self, tmp_path: Path) -> None:
        """A pid file nobody holds is a crash's leftover, and its pid may be another process
        by now: `down` reports nothing running and signals nobody."""
        bystander = subprocess.Popen(["sleep", "30"])
        try:
            settings = Settings().model_copy(update={"data_dir": tmp_path / "data"})
            stale = DataDirClaim(settings).path
            stale.parent.mkdir(parents=True)
            stale.write_text(str(bystander.pid))
            result = _run(tmp_path, "down")
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == "dwaybank was not running."
            assert bystander.poll() is None
        finally:
            bystander.kill()
            bystander.wait()
