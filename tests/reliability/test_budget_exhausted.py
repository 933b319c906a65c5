"""A hard budget that refuses requests says so, once, in the production shape: two gateway
instances under `uvicorn --workers 2` take concurrent requests that the budget refuses, and a
Celery worker on RabbitMQ sends one "budget exhausted" alert to the budget's webhook."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis as redis_sync
from kombu import Connection

from budgets.keys import budget_keys
from budgets.models import BudgetAlert
from budgets.windows import current_windows
from gateway.money import usd_to_units
from tests.budgets.conftest import Receiver
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
)
from tests.processes import (
    GatewayProcess,
    requires_postgres,
    requires_real_redis,
    shared_database_url,
    wait_for,
)
from tests.reliability.test_production_logs import RABBITMQ, rabbitmq_up

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_real_redis,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not rabbitmq_up(), reason="needs RabbitMQ on 127.0.0.1:5672"),
]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def webhook():
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_concurrent_refusals_on_two_instances_send_one_exhausted_alert(tmp_path, settings, webhook):
    team = make_team("acme")
    make_feature(team, "chatbot")
    make_model("gpt-sim", make_provider(), input_price="1000", output_price="2000")
    budget = make_budget(team, daily_limit_usd="1", hard=True, alert_thresholds=[50, 80, 100],
                         webhook_url=webhook.url)  # fmt: skip
    secret = make_key(team)[1]
    day = current_windows(team.timezone)[0].key
    store = redis_sync.Redis.from_url(settings.REDIS_URL)
    # $0.999 already spent: the $0.001 left covers no request of this model.
    store.set(budget_keys(budget.team_id, budget.id, day).spent, usd_to_units(Decimal("0.999")))

    queue = f"gw-test-{uuid.uuid4().hex[:8]}"
    env = {"CELERY_BROKER_URL": RABBITMQ, "CELERY_TASK_ALWAYS_EAGER": "0", "CELERY_QUEUE": queue}
    worker_env = {**os.environ, **env, "DATABASE_URL": shared_database_url(),
                  "REDIS_URL": settings.REDIS_URL, "SECRET_KEY": "test-secret"}  # fmt: skip
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "gatewaysite", "-q", "worker", "-P", "solo",
             "--loglevel=INFO", "--without-heartbeat", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env=worker_env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    instances = [
        GatewayProcess(
            redis_url=settings.REDIS_URL, log_dir=tmp_path, args=("--workers", "2"), **env
        )  # fmt: skip
        for _ in range(2)
    ]
    try:
        for gateway in instances:
            gateway.wait_ready(timeout=60)
        wait_for(lambda: "ready." in worker_log.read_text(), timeout=30, what="the worker")
        headers = {"Authorization": f"Bearer {secret}", "X-Gateway-Feature": "chatbot"}
        body = {"model": "gpt-sim", "max_tokens": 100,
                "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip

        def wave(n: int) -> list[int]:
            def one(i: int) -> int:
                url = f"{instances[i % 2].base_url}/chat/completions"
                return httpx.post(url, json=body, headers=headers, timeout=30).status_code

            with ThreadPoolExecutor(16) as pool:
                return list(pool.map(one, range(n)))

        assert wave(32) == [429] * 32

        def exhausted() -> list[dict]:
            return [b for b in webhook.bodies if b["text"].startswith("Budget exhausted")]

        wait_for(exhausted, timeout=30, what="the exhausted alert")
        # A second wave: the claim holds, nothing more is sent.
        assert wave(16) == [429] * 16
        time.sleep(3)
    finally:
        for gateway in instances:
            gateway.stop()
        worker.terminate()
        worker.wait(20)
        with Connection(RABBITMQ) as broker:
            broker.channel().queue_delete(queue)
        store.delete(*store.keys(f"gw:budget:{budget.id}:*"))

    assert [b["text"] for b in exhausted()] == [exhausted()[0]["text"]]
    assert "$0.999 spent of $1" in exhausted()[0]["text"]
    # 48 refusals on four processes: one alert task was ever enqueued.
    sent = [line for line in worker_log.read_text().splitlines()
            if "send_budget_alert" in line and "succeeded" in line]  # fmt: skip
    assert len(sent) == 1, sent
    alerts = BudgetAlert.objects.filter(budget=budget)
    assert list(alerts.values_list("threshold", "channel", "status")) == [(100, "webhook", "sent")]
