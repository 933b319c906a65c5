"""Rotating a provider key without restarting anything: the provider names OPENAI-style
`api_key_env`, the deployment sets `<that name>_FILE` to a file holding the key, and a new key
written to the file reaches every worker of a running `uvicorn --workers 2` within the config
TTL (docs/operations.md "Provider key rotation"). The client is the official OpenAI SDK."""

from __future__ import annotations

import os
import time

import pytest
from openai import OpenAI

from tests.factories import make_feature, make_key, make_model, make_provider, make_team
from tests.processes import GatewayProcess, requires_postgres, requires_real_redis

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_real_redis,
    pytest.mark.django_db(transaction=True),
]


def write_key(path, key: str) -> None:
    """As an operator (or a secret manager's agent) should: a new file renamed over the old."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(key + "\n")
    os.replace(tmp, path)


def test_a_key_rotated_in_its_file_reaches_every_worker_without_a_restart(
    openai_server, tmp_path, settings
):
    team = make_team("acme")
    make_feature(team, "chatbot")
    provider = make_provider("openai", kind="openai", base_url=openai_server.base_url,
                             api_key_env="ROTATED_OPENAI_API_KEY", options={})  # fmt: skip
    make_model("gpt-4o", provider)
    secret = make_key(team)[1]
    key_file = tmp_path / "openai.key"
    write_key(key_file, "sk-old")
    gateway = GatewayProcess(
        redis_url=settings.REDIS_URL,
        log_dir=tmp_path,
        args=("--workers", "2"),
        ROTATED_OPENAI_API_KEY_FILE=str(key_file),
        GATEWAY_CONFIG_TTL_S="1",
    )
    headers = {"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "0"}
    client = OpenAI(
        base_url=gateway.base_url, api_key=secret, max_retries=0, default_headers=headers
    )

    def upstream_keys(n: int) -> list[str]:
        before = len(openai_server.requests)
        for _ in range(n):
            answer = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
            assert answer.choices[0].message.content
        return [r.headers["authorization"] for r in openai_server.requests[before:]]

    try:
        gateway.wait_ready(timeout=60)
        assert set(upstream_keys(6)) == {"Bearer sk-old"}
        write_key(key_file, "sk-new")
        rotated = time.monotonic()
        while set(upstream_keys(4)) != {"Bearer sk-new"}:
            assert time.monotonic() - rotated < 15, "the new key did not reach every worker"
            time.sleep(0.3)
        # From then on, every worker sends the new key only.
        assert set(upstream_keys(10)) == {"Bearer sk-new"}
        assert gateway.process.poll() is None  # nothing was restarted
    finally:
        gateway.stop()
    log = gateway.log_path.read_text()
    assert "sk-new" not in log and "sk-old" not in log
