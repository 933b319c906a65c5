"""The pipeline's one entry as another inbound format calls it: `services.run(CHAT, ...)`
with a request already parsed (a dict, no bytes), and a `ChatOperation` subclass that names
its own endpoint in the ledger. The answer is an `Answer`: a JSON body, or SSE bytes."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway import ledger, services
from gateway.models import UsageRecord
from gateway.operations.chat import CHAT, ChatOperation
from tests.factories import make_key, make_model, make_provider, make_team

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "Say hello"}]


def setup() -> dict[str, str]:
    team = make_team("acme")
    make_model("sim-model", make_provider(), input_price="1", output_price="2")
    return {"authorization": f"Bearer {make_key(team)[1]}", "x-gateway-cache-ttl": "0"}


def records() -> list[UsageRecord]:
    ledger.drain()
    return list(UsageRecord.objects.order_by("created_at"))


class TranslatedChat(ChatOperation):
    """What an inbound format on top of chat looks like: its name, its answer's shape."""

    endpoint = "messages"

    def client_body(self, call, body):
        return {"type": "message", "text": body["choices"][0]["message"]["content"]}


async def test_a_parsed_request_runs_the_whole_pipeline():
    headers = await asyncio.to_thread(setup)
    answer = await services.run(
        CHAT, headers=headers, body={"model": "sim-model", "messages": HELLO}
    )
    assert answer.status == 200 and not answer.streamed
    assert answer.body["object"] == "chat.completion"
    assert answer.headers["X-Gateway-Model"] == "sim-model"
    assert answer.headers["X-Gateway-Cost-USD"] not in ("0", "pending")
    [row] = await asyncio.to_thread(records)
    assert (row.endpoint, row.status, row.request_id) == (
        "chat.completions",
        "ok",
        answer.headers["X-Request-ID"],
    )


async def test_a_streamed_request_answers_sse_bytes_ending_in_done():
    headers = await asyncio.to_thread(setup)
    body = {"model": "sim-model", "messages": HELLO, "stream": True}
    answer = await services.run(CHAT, headers=headers, body=body)
    assert answer.streamed and answer.body is None
    events = [event async for event in answer.events]
    assert events[-1] == b"data: [DONE]\n\n"
    first = orjson.loads(events[0].removeprefix(b"data: "))
    assert first["object"] == "chat.completion.chunk"


async def test_an_error_is_an_answer_in_the_operations_envelope():
    headers = await asyncio.to_thread(setup)
    answer = await services.run(CHAT, headers=headers, body={"model": "sim-model"})
    assert answer.status == 400
    assert answer.body["error"]["param"] == "messages"
    assert answer.headers["X-Request-ID"].startswith("req_")


async def test_a_subclass_shapes_its_answer_and_names_its_endpoint_in_the_ledger():
    headers = await asyncio.to_thread(setup)
    operation = TranslatedChat()
    answer = await services.run(
        operation, headers=headers, body={"model": "sim-model", "messages": HELLO}
    )
    assert answer.body["type"] == "message" and answer.body["text"]
    [row] = await asyncio.to_thread(records)
    assert (row.endpoint, row.status) == ("messages", "ok")
