"""/metrics as production serves it: `uvicorn --workers 2` with PROMETHEUS_MULTIPROC_DIR set.

Prometheus rejects a whole scrape that names a metric twice, so the test parses the
exposition with prometheus_client's own parser and checks each family appears once, with
the circuit state as Redis has it, after both workers served requests.
"""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import circuit
from tests.factories import make_feature, make_key, make_model, make_provider, make_team
from tests.processes import GatewayProcess, requires_postgres, requires_real_redis

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_real_redis,
    pytest.mark.django_db(transaction=True),
]


def test_two_workers_expose_each_metric_once(tmp_path, redis_sync, settings):
    team = make_team("acme")
    make_feature(team, "chatbot")
    make_model("sim-model", make_provider("sim", kind="simulated"))
    secret = make_key(team)[1]
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    gateway = GatewayProcess(
        redis_url=settings.REDIS_URL,
        log_dir=tmp_path,
        args=("--workers", "2"),
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
        METRICS_TOKEN="scrape-token",
    )
    try:
        gateway.wait_ready(timeout=60)
        body = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {secret}", "X-Gateway-Feature": "chatbot"}
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            # New connections are spread over both workers by the kernel; enough of them
            # reach each worker for both to write their files.
            for _ in range(20):
                with httpx.Client(base_url=gateway.url, timeout=30) as fresh:
                    assert fresh.post("/v1/chat/completions", json=body, headers=headers).is_success
            redis_sync.hset(
                circuit.PREFIX + "sim",
                mapping={"open_until": int(time.time() * 1000) + 60_000, "fails": 0},
            )
            scrapes = [
                http.get("/metrics", headers={"Authorization": "Bearer scrape-token"})
                for _ in range(4)
            ]
    finally:
        gateway.stop()

    assert len(list(multiproc.glob("*.db"))) >= 2, "both workers kept their counters in files"
    for scrape in scrapes:
        assert scrape.status_code == 200
        families = list(text_string_to_metric_families(scrape.text))
        names = [f.name for f in families]
        assert len(names) == len(set(names)), f"a metric named twice: {sorted(names)}"
        types = [line for line in scrape.text.splitlines() if line.startswith("# TYPE ")]
        assert len(types) == len(set(types))
        by_name = {f.name: f for f in families}
        assert [s.value for s in by_name["gateway_circuit_state"].samples] == [1.0]
        served = sum(s.value for s in by_name["gateway_requests"].samples
                     if s.name == "gateway_requests_total")  # fmt: skip
        assert served == 20
