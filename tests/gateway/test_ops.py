"""Operability: /healthz, /readyz, /metrics (token, counters, multi-process, circuit state)
and JSON log lines carrying the request id."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis_async
from django.conf import settings
from django.db import OperationalError, connections
from prometheus_client import REGISTRY

from gateway import circuit, ledger, metrics, runtime, services
from gateway.logs import JsonFormatter, request_id_var
from tests.factories import make_feature, make_key, make_model, make_provider, make_team
from tests.gateway_server import free_port

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(settings.BASE_DIR)
HELLO = [{"role": "user", "content": "Say hello, please"}]
# As a TLS-terminating proxy says it: production mode would redirect plain HTTP to HTTPS.
HTTPS = {"X-Forwarded-Proto": "https"}


def url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def entry(**fields) -> dict:
    base = {
        "team_id": 1,
        "feature_id": 2,
        "served_model": "gpt-test",
        "provider": "prov-test",
        "status": "ok",
        "cache": "miss",
        "latency_ms": 1500,
        "input_tokens": 10,
        "output_tokens": 20,
        "cost_usd": "0.0000450000",
        "attempts": 1,
        "attempt_log": [{"model": "gpt-test", "provider": "prov-test", "error": ""}],
        "error_type": "",
        "http_status": 200,
    }
    return {**base, **fields}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


LABELS = {
    "team": "ops-team",
    "feature": "ops-feature",
    "model": "gpt-test",
    "provider": "prov-test",
}


def test_healthz_answers_ok(gateway_server):
    response = httpx.get(url(gateway_server, "/healthz"), headers=HTTPS)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_when_redis_and_the_database_answer(gateway_server):
    response = httpx.get(url(gateway_server, "/readyz"), headers=HTTPS)
    assert response.status_code == 200
    body = response.json()
    # The in-process stand-in in the embedded mode; a real Redis says how it persists.
    persistence = body.pop("redis_persistence")
    assert persistence in (("aof", "rdb", "none") if settings.REDIS_URL else ("embedded",))
    assert body == {
        "status": "ok",
        "checks": {"redis": "ok", "database": "ok"},
        "unapplied_migrations": 0,
    }


def test_readyz_is_503_naming_redis_when_redis_is_unreachable(gateway_server, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setattr(
        runtime,
        "aredis",
        lambda: redis_async.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2),
    )
    response = httpx.get(url(gateway_server, "/readyz"), headers=HTTPS, timeout=10)
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"redis": "unavailable", "database": "ok"},
        "redis_persistence": "unavailable" if settings.REDIS_URL else "embedded",
        "unapplied_migrations": 0,
    }


def test_readyz_is_503_naming_the_database_when_it_fails(gateway_server, monkeypatch):
    def broken_cursor(*args, **kwargs):
        raise OperationalError("connection refused")

    # Every connection of this backend, whichever thread the server's probe runs in.
    monkeypatch.setattr(type(connections["default"]), "cursor", broken_cursor)
    response = httpx.get(url(gateway_server, "/readyz"), headers=HTTPS, timeout=10)
    assert response.status_code == 503
    assert response.json()["checks"] == {"redis": "ok", "database": "unavailable"}


@pytest.fixture
def production_metrics(settings):
    settings.DEBUG = False
    settings.METRICS_TOKEN = "scrape-token-for-tests"
    return "scrape-token-for-tests"


def test_metrics_without_a_token_is_401(gateway_server, production_metrics):
    response = httpx.get(url(gateway_server, "/metrics"), headers=HTTPS)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["type"] == "authentication_error"


def test_metrics_with_a_wrong_token_is_403(gateway_server, production_metrics):
    response = httpx.get(
        url(gateway_server, "/metrics"), headers={**HTTPS, "Authorization": "Bearer nope"}
    )
    assert response.status_code == 403
    assert b"gateway_requests" not in response.content


def test_metrics_are_refused_in_production_when_no_token_is_configured(gateway_server, settings):
    settings.DEBUG = False
    settings.METRICS_TOKEN = ""
    response = httpx.get(
        url(gateway_server, "/metrics"), headers={**HTTPS, "Authorization": "Bearer x"}
    )
    assert response.status_code == 403
    assert "METRICS_TOKEN" in response.json()["error"]["message"]


def test_metrics_with_the_token_are_prometheus_text(gateway_server, production_metrics):
    metrics.observe(entry(), team_name="ops-team", feature_name="ops-feature")
    response = httpx.get(
        url(gateway_server, "/metrics"),
        headers={**HTTPS, "Authorization": f"Bearer {production_metrics}"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert (
        'gateway_requests_total{cache="miss",feature="ops-feature",model="gpt-test",'
        'provider="prov-test",status="ok",team="ops-team"}' in response.text
    )


def test_metrics_report_an_open_circuit_from_redis(gateway_server, settings, redis_sync):
    settings.DEBUG = True
    settings.METRICS_TOKEN = ""
    make_model("sim-model", make_provider("sim"))
    make_model("other-model", make_provider("healthy"))
    redis_sync.hset(
        circuit.PREFIX + "sim", mapping={"open_until": int(time.time() * 1000) + 60_000}
    )
    redis_sync.hset(circuit.PREFIX + "healthy", mapping={"fails": 2})
    text = httpx.get(url(gateway_server, "/metrics"), headers=HTTPS).text
    assert 'gateway_circuit_state{provider="sim"} 1.0' in text
    assert 'gateway_circuit_state{provider="healthy"} 0.0' in text
    assert 'gateway_circuit_consecutive_failures{provider="healthy"} 2.0' in text


def test_observe_counts_a_request_its_latency_tokens_and_cost():
    before = {
        "requests": sample("gateway_requests_total", **LABELS, status="ok", cache="miss"),
        "latency": sample("gateway_request_latency_seconds_count", **LABELS),
        "slow": sample("gateway_request_latency_seconds_bucket", **LABELS, le="1.0"),
        "input": sample("gateway_tokens_total", **LABELS, direction="input"),
        "output": sample("gateway_tokens_total", **LABELS, direction="output"),
        "cost": sample("gateway_cost_usd_total", **LABELS),
    }
    metrics.observe(entry(), team_name="ops-team", feature_name="ops-feature")
    assert sample("gateway_requests_total", **LABELS, status="ok", cache="miss") == (
        before["requests"] + 1
    )
    assert sample("gateway_request_latency_seconds_count", **LABELS) == before["latency"] + 1
    assert sample("gateway_request_latency_seconds_bucket", **LABELS, le="1.0") == before["slow"]
    assert sample("gateway_tokens_total", **LABELS, direction="input") == before["input"] + 10
    assert sample("gateway_tokens_total", **LABELS, direction="output") == before["output"] + 20
    assert sample("gateway_cost_usd_total", **LABELS) == pytest.approx(before["cost"] + 0.000045)


def test_observe_counts_fallbacks_failed_providers_cache_hits_and_budget_refusals():
    labels = {**LABELS, "team": "ops-team-2"}
    team_feature = {"team": "ops-team-2", "feature": "ops-feature"}
    failed = [{"model": "a", "provider": "down-prov", "error": "HTTP 500"}] * 2
    before = (
        sample("gateway_fallbacks_total", **labels),
        sample("gateway_provider_failures_total", provider="down-prov"),
        sample("gateway_cache_hits_total", **labels),
        sample("gateway_budget_refusals_total", **team_feature),
    )
    metrics.observe(
        entry(attempts=3, attempt_log=failed + [{"provider": "prov-test", "error": ""}]),
        team_name="ops-team-2",
        feature_name="ops-feature",
    )
    metrics.observe(entry(cache="hit"), team_name="ops-team-2", feature_name="ops-feature")
    refused = entry(status="refused", error_type="budget_exceeded", attempts=0, attempt_log=[])
    metrics.observe(refused, team_name="ops-team-2", feature_name="ops-feature")
    assert sample("gateway_fallbacks_total", **labels) == before[0] + 2
    assert sample("gateway_provider_failures_total", provider="down-prov") == before[1] + 2
    assert sample("gateway_cache_hits_total", **labels) == before[2] + 1
    assert sample("gateway_budget_refusals_total", **team_feature) == before[3] + 1


def test_observe_takes_the_entry_that_record_builds(gateway_server, monkeypatch):
    """The pipeline's ledger entry, captured on its way to Redis, is what observe() reads."""
    entries: list[dict] = []
    real_push = ledger.queue_push

    def capture(trip, record):
        entries.append(record)
        real_push(trip, record)

    monkeypatch.setattr(services.ledger, "queue_push", capture)
    team = make_team("recorded")
    make_feature(team, "chat")
    _, secret = make_key(team)
    make_model("sim-model", make_provider("sim"))
    response = httpx.post(
        f"{gateway_server.base_url}/chat/completions",
        json={"model": "sim-model", "messages": HELLO},
        headers={**HTTPS, "Authorization": f"Bearer {secret}", "X-Gateway-Feature": "chat"},
    )
    assert response.status_code == 200
    labels = {"team": "recorded", "feature": "chat", "model": "sim-model", "provider": "sim"}
    before = sample("gateway_requests_total", **labels, status="ok", cache="miss")
    metrics.observe(entries[-1], team_name="recorded", feature_name="chat")
    assert sample("gateway_requests_total", **labels, status="ok", cache="miss") == before + 1
    assert sample("gateway_tokens_total", **labels, direction="input") > 0


def test_observe_costs_microseconds():
    record = entry()
    metrics.observe(record, team_name="ops-team", feature_name="ops-feature")  # warm the labels
    start = time.perf_counter()
    for _ in range(2000):
        metrics.observe(record, team_name="ops-team", feature_name="ops-feature")
    per_call_us = (time.perf_counter() - start) / 2000 * 1e6
    assert per_call_us < 200, f"observe() took {per_call_us:.0f} µs per call"


_OBSERVE = """
from gateway import metrics
metrics.observe({"team_id": 1, "served_model": "m", "provider": "p", "status": "ok",
                 "cache": "miss", "latency_ms": 5, "input_tokens": 7, "attempts": 1},
                team_name="multi")
"""
_EXPOSE = "import sys; from gateway import metrics; sys.stdout.write(metrics.exposition().decode())"


def test_metrics_of_several_worker_processes_are_summed_in_multiprocess_mode(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):  # two workers, each with its own counters, writing to the shared dir
        subprocess.run([sys.executable, "-c", _OBSERVE], env=env, cwd=ROOT, check=True, timeout=60)
    out = subprocess.run(
        [sys.executable, "-c", _EXPOSE],
        env=env,
        cwd=ROOT,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    assert (
        'gateway_tokens_total{direction="input",feature="",model="m",provider="p",team="multi"} '
        "14.0" in out
    )


def test_json_log_lines_carry_the_request_id():
    formatter = JsonFormatter()
    token = request_id_var.set("req_abc123")
    try:
        record = logging.LogRecord(
            "gateway.services", logging.WARNING, "f.py", 1, "slow %s", ("x",), None
        )
        line = json.loads(formatter.format(record))
    finally:
        request_id_var.reset(token)
    assert line["level"] == "WARNING"
    assert line["logger"] == "gateway.services"
    assert line["message"] == "slow x"
    assert line["request_id"] == "req_abc123"
    assert line["ts"].endswith("+00:00")


def test_json_log_lines_leave_out_the_request_id_outside_a_request():
    record = logging.LogRecord("x", logging.INFO, "f.py", 1, "boot", (), None)
    line = json.loads(JsonFormatter().format(record))
    assert "request_id" not in line
    assert line["message"] == "boot"


def test_production_logs_are_json_lines(tmp_path):
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "k" * 60,
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    env.pop("LOG_FORMAT", None)
    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('gateway.test').warning('hello %s', 'ops')"
    )
    env["DJANGO_SETTINGS_MODULE"] = "gatewaysite.settings"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello ops"
    assert line["logger"] == "gateway.test"
