"""Logs as an operator reads them in production: every line of the gateway and of a Celery
worker on RabbitMQ is a JSON object, lines written while serving a request carry its
X-Request-ID, and a refusal (a ledger outcome) is logged at INFO, not as a warning."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from kombu import Connection

from tests.factories import make_feature, make_key, make_model, make_provider, make_team
from tests.processes import (
    GatewayProcess,
    requires_postgres,
    requires_real_redis,
    shared_database_url,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_real_redis,
    pytest.mark.django_db(transaction=True),
]
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
ROOT = Path(__file__).resolve().parents[2]


def rabbitmq_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
        return True
    except OSError:
        return False


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            raise AssertionError(f"a log line that is not JSON: {line!r}\n---\n{text}") from None
    return [json.loads(line) for line in lines]


def test_the_gateway_logs_json_with_request_ids_and_refusals_at_info(tmp_path, settings):
    team = make_team("acme")
    make_feature(team, "chatbot")
    dead = make_provider("dead", kind="openai", base_url="http://127.0.0.1:9/v1",
                         api_key_env="TEST_OPENAI_API_KEY", options={})  # fmt: skip
    make_model("gpt-dead", dead)
    secret = make_key(team)[1]
    gateway = GatewayProcess(
        redis_url=settings.REDIS_URL,
        log_dir=tmp_path,
        args=(
            "--workers",
            "2",
            "--log-config",
            str(ROOT / "gatewaysite" / "logging.json"),
            "--log-level",
            "info",
        ),  # fmt: skip
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        ALLOWED_HOSTS="127.0.0.1",
        LOG_FORMAT="json",
    )
    try:
        gateway.wait_ready(timeout=60)
        headers = {"Authorization": f"Bearer {secret}", "X-Gateway-Feature": "chatbot"}
        body = {"model": "gpt-dead", "messages": [{"role": "user", "content": "hi"}]}
        failed = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers)
        assert failed.status_code == 502
        request_id = failed.headers["X-Request-ID"]
        wait_for(lambda: request_id in gateway.output(), timeout=10, what="the 502's log line")
    finally:
        gateway.stop()

    lines = json_lines(gateway.log_path.read_text())
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    mine = [line for line in lines if line.get("request_id") == request_id]
    assert mine, "no line carries the request id"
    outcome = [line for line in mine if line["logger"] == "django.request"]
    assert [line["level"] for line in outcome] == ["INFO"]
    assert not [line for line in lines if line["level"] in ("WARNING", "ERROR")
                and line["logger"] == "django.request"]  # fmt: skip


@pytest.mark.skipif(not rabbitmq_up(), reason="needs RabbitMQ on 127.0.0.1:5672")
def test_a_celery_worker_on_rabbitmq_logs_json_and_serves_only_its_queue(tmp_path, settings):
    queue = f"gw-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": shared_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "test-secret",
        "CELERY_BROKER_URL": RABBITMQ,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "CELERY_QUEUE": queue,
        "LOG_FORMAT": "json",
    }
    log = Path(tmp_path / "worker.log")
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "gatewaysite", "-q", "worker", "-P", "solo",
             "--loglevel=INFO", "--without-heartbeat", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for(lambda: "ready." in log.read_text(), timeout=30, what="the worker")
            # A task sent by a deployment with another queue name stays in the broker.
            other = {**env, "CELERY_QUEUE": queue + "-other"}
            call = [sys.executable, "-m", "celery", "-A", "gatewaysite", "call"]
            foreign, mine = (
                subprocess.run([*call, "gateway.tasks.drain_ledger"], env=e, cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
                for e in (other, env)
            )  # fmt: skip
            wait_for(lambda: f"[{mine}] succeeded" in log.read_text(), timeout=30,
                     what="the task to run")  # fmt: skip
            # Read before stopping it: on a signal Celery prints "worker: Warm shutdown" to
            # stderr itself, outside logging (docs/operations.md says so).
            text = log.read_text()
        finally:
            worker.terminate()
            worker.wait(20)
            with Connection(RABBITMQ) as broker:  # leave no test queue behind
                channel = broker.channel()
                for name in (queue, queue + "-other"):
                    channel.queue_delete(name)
    json_lines(text)
    assert foreign not in text
