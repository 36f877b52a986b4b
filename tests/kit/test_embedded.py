"""Embedded servers keep their data across restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kit.embedded import EmbeddedPostgres, EmbeddedRedis
from kit.redis_client import create_redis
from kit.settings import Settings

pytestmark = pytest.mark.db


class TestEmbeddedRedis:
    async def test_data_survives_a_restart(self, tmp_path: Path) -> None:
        """A key written before stop() is there after the next start() (append-only file)."""
        folder = tmp_path / "d"
        server = EmbeddedRedis(folder)
        url = server.start()
        try:
            client = create_redis(Settings(), url)
            await client.set("k", "v")
            await client.aclose()
            await asyncio.to_thread(server.stop)
            assert not server.is_running()
            url = server.start()
            client = create_redis(Settings(), url)
            assert await client.get("k") == b"v"
            await client.aclose()
        finally:
            server.stop()

    def test_start_is_idempotent(self, tmp_path: Path) -> None:
        """Starting a running server reuses it."""
        server = EmbeddedRedis(tmp_path / "d")
        try:
            assert server.start() == server.start()
        finally:
            server.stop()
        assert not server.is_running()


class TestEmbeddedPostgres:
    def test_dsn_points_at_the_project_database(self) -> None:
        """The admin URI of pgserver becomes the DSN of the dwaybank database."""
        dsn = EmbeddedPostgres.dsn("postgresql://postgres:@/postgres?host=/data/pg")
        assert dsn == "postgresql://postgres:@/dwaybank?host=/data/pg"
