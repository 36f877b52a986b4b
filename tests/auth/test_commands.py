"""`dwaybank keys`, `outbox`, `oauth-client` and `admin`: the identity command group.

Run as subprocesses against the test database, with the test data folder (so the development
key-encryption key is the one the rest of the suite sealed keys with).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kit.db import Database
from kit.settings import Settings

pytestmark = pytest.mark.db

COMMAND_TIMEOUT_S = 60


def _run(settings: Settings, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(DATABASE_URL=dsn, DWAYBANK_DATA_DIR=str(settings.data_dir))
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


class TestKeys:
    def test_rotate_publishes_and_lists(self, settings: Settings, database_dsn: str) -> None:
        """A forced rotation activates the next key and publishes a new one; list shows both."""
        rotated = _run(settings, database_dsn, "keys", "rotate", "--force")
        assert rotated.returncode == 0, rotated.stderr
        lines = rotated.stdout.splitlines()
        assert lines[0].startswith("activated ")
        assert lines[2].endswith("(next)")
        published = lines[2].split()[1]
        listed = _run(settings, database_dsn, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        assert any(
            line.startswith(published) and " next " in line for line in listed.stdout.splitlines()
        )

    def test_unforced_rotation_right_after_is_refused(
        self, settings: Settings, database_dsn: str
    ) -> None:
        """Rotating again at once fails with one error line: the next key is too new."""
        _run(settings, database_dsn, "keys", "rotate", "--force")
        again = _run(settings, database_dsn, "keys", "rotate")
        assert again.returncode == 1
        assert again.stderr.startswith("dwaybank: error: The next key was published too recently")


class TestOutbox:
    async def test_outbox_prints_recorded_messages(
        self, settings: Settings, database_dsn: str, db: Database
    ) -> None:
        """Messages recorded by the local provider are listed for their recipient."""
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO auth_outbox (channel, recipient, body)"
                " VALUES ('sms', '+15550001111', 'code 123456')"
            )
        result = _run(settings, database_dsn, "outbox", "--to", "+15550001111")
        assert result.returncode == 0, result.stderr
        assert "sms   +15550001111: code 123456" in result.stdout


class TestClientsAndAdmins:
    def test_oauth_client_add_prints_the_secret_once(
        self, settings: Settings, database_dsn: str
    ) -> None:
        """A confidential client gets an id and a secret; a public one only an id."""
        confidential = _run(
            settings,
            database_dsn,
            "oauth-client",
            "add",
            "App",
            "--redirect-uri",
            "https://a.example/cb",
        )
        assert confidential.returncode == 0, confidential.stderr
        assert "client_secret" in confidential.stdout
        public = _run(
            settings,
            database_dsn,
            "oauth-client",
            "add",
            "Mobile",
            "--redirect-uri",
            "com.example.app:/cb",
            "--public",
        )
        assert "client_secret" not in public.stdout

    def test_admin_grant_needs_a_user(self, settings: Settings, database_dsn: str) -> None:
        """Granting to an unknown address fails with one line."""
        result = _run(settings, database_dsn, "admin", "grant", "nobody@example.com")
        assert result.returncode == 1
        assert result.stderr.strip() == "dwaybank: error: no user has that email address"
