"""Draining an instance as a load balancer sees it: from SIGTERM until the process exits,
/readyz answers 503 `draining` on new connections while a slow request in flight finishes,
under `uvicorn --workers 2` (gateway/drain.py, docs/operations.md "Draining an instance")."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from tests.factories import make_feature, make_key, make_model, make_provider, make_team
from tests.processes import GatewayProcess, requires_postgres, requires_real_redis

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_real_redis,
    pytest.mark.django_db(transaction=True),
]


def children(parent: int) -> list[int]:
    """The processes whose parent is `parent` (uvicorn's workers), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry))
    return found


def test_readyz_answers_503_from_sigterm_until_exit_while_a_slow_request_finishes(
    tmp_path, settings
):
    team = make_team("acme")
    make_feature(team, "chatbot")
    make_model("slow-sim", make_provider(options={"latency_ms": 4000}))
    secret = make_key(team)[1]
    gateway = GatewayProcess(
        redis_url=settings.REDIS_URL,
        log_dir=tmp_path,
        args=("--workers", "2", "--timeout-graceful-shutdown", "30"),
        GATEWAY_DRAIN_S="2",
    )
    try:
        gateway.wait_ready(timeout=60)
        assert httpx.get(gateway.url + "/readyz").status_code == 200
        slow: dict = {}

        def call() -> None:
            response = httpx.post(
                f"{gateway.base_url}/chat/completions",
                json={"model": "slow-sim", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {secret}", "X-Gateway-Feature": "chatbot"},
                timeout=30,
            )
            slow.update(status=response.status_code, done=time.monotonic())

        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(1.0)  # the request is upstream (4 s)
        workers = children(gateway.process.pid)
        assert len(workers) >= 2, workers
        gateway.signal(signal.SIGTERM)
        sent = time.monotonic()
        # As systemd does (every process of the unit): the workers get their own SIGTERM
        # too, besides the one uvicorn's supervisor passes on. It must not cut the drain short.
        for pid in workers:
            os.kill(pid, signal.SIGTERM)

        probes: list[tuple[float, int | str, dict | None]] = []
        while gateway.process.poll() is None and time.monotonic() - sent < 30:
            try:  # a new connection each time, like a load balancer's health check
                answer = httpx.get(gateway.url + "/readyz", timeout=2)
                probes.append((time.monotonic() - sent, answer.status_code, answer.json()))
            except httpx.TransportError as exc:  # the listener is closed: shutting down
                probes.append((time.monotonic() - sent, type(exc).__name__, None))
            time.sleep(0.1)
        exited = time.monotonic() - sent
        thread.join(30)
    finally:
        gateway.stop()

    answered = [(t, status, body) for t, status, body in probes if isinstance(status, int)]
    assert answered, f"no /readyz answer after SIGTERM: {probes}\n{gateway.output()}"
    # Every answer between SIGTERM and exit was 503 draining, for about the drain period.
    # uvicorn's supervisor passes the signal on to its workers within half a second; from
    # then until exit every answer is 503 draining, for about the drain period (2 s).
    first = next(i for i, (_, status, _) in enumerate(answered) if status == 503)
    assert answered[first][0] < 1.0, probes
    assert {status for _, status, _ in answered[first:]} == {503}, probes
    assert {body["status"] for _, _, body in answered[first:]} == {"draining"}
    assert answered[-1][0] - answered[first][0] >= 1.5, probes
    # The request in flight at SIGTERM finished and was answered before the process exited.
    assert slow["status"] == 200
    assert slow["done"] - sent < exited
    assert gateway.process.returncode is not None
