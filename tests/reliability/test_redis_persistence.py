"""A gateway started on a Redis that would lose the ledger queue on restart says so: a WARNING
at start and `redis_persistence` in /readyz (a report, not a failure), for a Redis without
persistence, one with the append-only file, and one that refuses CONFIG."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.gateway_server import free_port
from tests.processes import (
    GatewayProcess,
    requires_postgres,
    requires_redis_server,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_redis_server,
    pytest.mark.django_db(transaction=True),
]


def readyz_and_log(redis_url: str, tmp_path) -> tuple[dict, str]:
    gateway = GatewayProcess(redis_url=redis_url, log_dir=tmp_path).wait_ready(timeout=60)
    try:
        answer = httpx.get(gateway.url + "/readyz", timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json(), gateway.output()
    finally:
        gateway.stop()


def test_a_redis_without_persistence_is_warned_about_and_reported(own_redis, tmp_path):
    body, log = readyz_and_log(own_redis.url, tmp_path)
    assert body["redis_persistence"] == "none"
    assert "WARNING" in log and "has no persistence" in log and "appendonly yes" in log


def test_a_redis_with_the_append_only_file_is_reported_without_a_warning(
    own_persistent_redis, tmp_path
):
    body, log = readyz_and_log(own_persistent_redis.url, tmp_path)
    assert body["redis_persistence"] == "aof"
    assert "persistence" not in log


def test_a_redis_that_refuses_config_is_reported_unknown(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--rename-command", "CONFIG", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import redis

        wait_for(lambda: _pong(redis.Redis(port=port)), timeout=10, what="redis-server")
        body, log = readyz_and_log(f"redis://127.0.0.1:{port}/0", tmp_path)
    finally:
        server.terminate()
        server.wait(10)
    assert body["redis_persistence"] == "unknown"
    assert "cannot be checked" in log


def _pong(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
