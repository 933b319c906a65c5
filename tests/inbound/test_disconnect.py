"""A client of /v1/messages or /v1/responses that hangs up, before the answer or in the
middle of a stream, leaves no budget hold behind and still leaves a record: the inbound
streams close the chat stream they read from, which accounts for what was delivered."""

from __future__ import annotations

import time

import httpx
import pytest

from gateway import ledger
from gateway.models import UsageRecord
from tests.factories import make_budget
from tests.gateway.test_disconnect import reserved_units
from tests.loopback import ok, slow, stall

pytestmark = pytest.mark.django_db(transaction=True)
ENDPOINTS = {
    "messages": (
        "/messages",
        {"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
    ),
    "responses": ("/responses", {"model": "gpt-4o-mini", "input": "hi"}),
}


def headers(world) -> dict[str, str]:
    return {
        "x-api-key": world["secret"],
        "anthropic-version": "2023-06-01",
        "X-Gateway-Feature": "agent",
        "X-Gateway-Cache-TTL": "0",
    }


def the_disconnect_record(world) -> UsageRecord:
    """The record of the request the client hung up on, once it is written. The hold is
    released before the record is pushed, so none is left by then."""
    records = UsageRecord.objects.filter(team=world["team"]).exclude(status="ok")
    deadline = time.monotonic() + 10
    while not records.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
        ledger.drain()
    assert reserved_units(world["team"]) == 0
    return records.get()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_hanging_up_before_the_answer_releases_the_hold(
    gateway_server, world, openai_server, endpoint, stream
):
    make_budget(world["team"], daily_limit_usd="100")
    openai_server.script(ok(), slow(3.0))
    path, body = ENDPOINTS[endpoint]
    url, body = gateway_server.base_url + path, {**body, "stream": stream}
    assert httpx.post(url, json=body, headers=headers(world)).status_code == 200  # warm
    ledger.drain()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=body, headers=headers(world), timeout=0.5)
    record = the_disconnect_record(world)
    assert record.error_type == "client_disconnected" and record.cost_usd == 0


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_hanging_up_mid_stream_settles_what_was_delivered(
    gateway_server, world, openai_server, endpoint
):
    make_budget(world["team"], daily_limit_usd="100")
    # The stream hangs after its first deltas: the third chat chunk, or the sixth Responses
    # event (created, in_progress, item added, part added, two deltas), passed through.
    openai_server.script(stall(after=6 if endpoint == "responses" else 3))
    path, body = ENDPOINTS[endpoint]
    with httpx.stream(
        "POST",
        gateway_server.base_url + path,
        json={**body, "stream": True},
        headers=headers(world),
    ) as response:
        lines = response.iter_lines()
        seen = [next(lines) for _ in range(15)]  # five events: the start, a first delta
    assert any("delta" in line for line in seen)
    record = the_disconnect_record(world)
    assert record.error_type == "client_disconnected" and record.stream is True
    assert record.output_tokens > 0 and record.cost_usd > 0
