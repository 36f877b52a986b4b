"""The environment `dwaybank up` gives Ray's processes for Serve behind HAProxy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from deployments.runtime import (
    HAPROXY_CORES_PER_THREAD,
    haproxy_threads,
    machine_cores,
    serve_controller_env,
    serve_ingress_env,
)
from kit.settings import Settings


def _settings(**values: object) -> Settings:
    return Settings.model_validate(values)


class TestHaproxyThreads:
    def test_the_setting_wins(self) -> None:
        """An operator's thread count reaches HAProxy as Serve's NBTHREAD."""
        env = serve_ingress_env(_settings(haproxy_threads=3))
        assert env["RAY_SERVE_HAPROXY_NBTHREAD"] == "3"

    def test_default_follows_the_cores_the_process_may_use(self) -> None:
        """Unset, one thread per four cores of the affinity mask, and never none."""
        cores = len(os.sched_getaffinity(0))
        assert machine_cores() == cores
        expected = max(1, cores // HAPROXY_CORES_PER_THREAD)
        assert haproxy_threads(_settings()) == expected
        assert serve_ingress_env(_settings())["RAY_SERVE_HAPROXY_NBTHREAD"] == str(expected)

    @pytest.mark.parametrize("threads", [0, -1, 65])
    def test_out_of_range_is_refused(self, threads: int) -> None:
        with pytest.raises(ValidationError):
            _settings(haproxy_threads=threads)


class TestServeIngressEnv:
    def test_throughput_mode_behind_haproxy_with_the_configured_ports(self) -> None:
        env = serve_ingress_env(_settings(haproxy_metrics_port=9201, haproxy_stats_port=9202))
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert env["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"
        assert env["RAY_SERVE_HAPROXY_METRICS_PORT"] == "9201"
        assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "9202"
        assert all(isinstance(value, str) for value in env.values())


class TestServeControllerEnv:
    def test_the_control_loop_period_is_the_setting(self) -> None:
        """Serve reads its controller's loop period from this variable; the default is the
        cheaper 0.5 s, and the setting is bounded."""
        assert serve_controller_env(_settings()) == {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}
        env = serve_controller_env(_settings(serve_control_loop_s=0.2))
        assert env == {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.2"}
        with pytest.raises(ValidationError):
            _settings(serve_control_loop_s=0)

    def test_serve_reads_that_variable(self) -> None:
        """The name is Serve's own: a process given this environment runs its controller's
        loop at that period (a renamed variable in a Ray upgrade would silently be 0.1 s)."""
        read = subprocess.run(
            [
                sys.executable,
                "-c",
                "from ray.serve._private.constants import CONTROL_LOOP_INTERVAL_S as s; print(s)",
            ],
            env={**os.environ, **serve_controller_env(_settings(serve_control_loop_s=0.7))},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert read.stdout.strip() == "0.7"
