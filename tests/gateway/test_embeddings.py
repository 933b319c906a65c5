"""POST /v1/embeddings end to end: the official `openai` SDK → the gateway on a loopback port
→ a loopback OpenAI server speaking the real embeddings wire format (and the simulated
provider). Priced by input tokens, reserved and settled, cached, recorded in the ledger with
its endpoint; fallback only to a model of the same dimensions."""

from __future__ import annotations

import base64
import math
import struct
from decimal import Decimal

import httpx
import openai
import pytest

from gateway import ledger
from gateway.models import UsageRecord
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_loopback_providers,
    make_model,
    make_provider,
    make_team,
    set_fallbacks,
)
from tests.loopback import fail

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = Decimal("0.02")  # USD per million input tokens, as text-embedding-3-small


@pytest.fixture
def world(openai_server, anthropic_server, monkeypatch):
    team = make_team("acme")
    make_feature(team, "search")
    _key, secret = make_key(team)
    oa, an = make_loopback_providers(openai_server, anthropic_server, monkeypatch)
    sim = make_provider("sim", kind="simulated", options={"latency_ms": 0})

    def embedding(name, provider, dims, **kw):
        return make_model(
            name, provider, input_price=str(PRICE), output_price="0", mode="embedding",
            dimensions=dims, **kw,
        )  # fmt: skip

    small = embedding("embed-small", oa, 1536, upstream_id="text-embedding-3-small")
    large = embedding("embed-large", oa, 3072, upstream_id="text-embedding-3-large")
    twin = embedding("embed-twin", oa, 1536, upstream_id="twin-1536")
    set_fallbacks(small, large, twin)
    embedding("sim-embed", sim, 8)
    make_model("gpt-4o", oa, input_price="2.50", output_price="10.00")
    make_model("claude", an, input_price="3", output_price="15")
    embedding("claude-embed", an, 1024)
    return {"team": team, "secret": secret}


def sdk(server, world, **headers) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url,
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": "search", **headers},
    )


def drained() -> list[UsageRecord]:
    ledger.drain()
    return list(UsageRecord.objects.order_by("created_at"))


def test_the_sdk_embeds_a_list_and_the_cost_is_tokens_times_price(
    gateway_server, world, openai_server
):
    texts = ["The quick brown fox", "jumps over the lazy dog!"]  # 19 and 24 characters
    raw = sdk(gateway_server, world).embeddings.with_raw_response.create(
        model="embed-small", input=texts
    )
    answer = raw.parse()  # the SDK asked for base64 (its default) and decoded it
    assert [len(d.embedding) for d in answer.data] == [1536, 1536]
    assert answer.usage.prompt_tokens == math.ceil(19 / 4) + math.ceil(24 / 4) == 11
    expected = Decimal(11) * PRICE / Decimal(1_000_000)
    assert Decimal(raw.headers["X-Gateway-Cost-USD"]) == expected
    sent = openai_server.requests[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.body["model"] == "text-embedding-3-small"
    assert sent.body["encoding_format"] == "float"  # base64 is the gateway's to encode
    [row] = drained()
    assert (row.endpoint, row.served_model, row.status) == ("embeddings", "embed-small", "ok")
    assert (row.input_tokens, row.output_tokens, row.cost_usd) == (11, 0, expected)
    assert row.stream is False


def test_floats_dimensions_and_token_arrays_are_served(gateway_server, world, openai_server):
    client = sdk(gateway_server, world)
    answer = client.embeddings.create(
        model="embed-small", input=[[1, 2, 3], [4, 5]], dimensions=64, encoding_format="float"
    )
    assert [len(d.embedding) for d in answer.data] == [64, 64]
    assert answer.usage.prompt_tokens == 5
    assert openai_server.requests[-1].body["dimensions"] == 64
    # The same vectors as base64 (asked for explicitly, the SDK hands the text over as is):
    # little-endian float32, as OpenAI sends them.
    again = client.embeddings.create(
        model="embed-small", input=[[1, 2, 3], [4, 5]], dimensions=64, encoding_format="base64"
    )
    decoded = struct.unpack("<64f", base64.b64decode(again.data[0].embedding))
    assert list(decoded) == pytest.approx(answer.data[0].embedding, abs=1e-6)


def test_an_embedding_is_cached_by_default(gateway_server, world, openai_server):
    client = sdk(gateway_server, world)
    first = client.embeddings.with_raw_response.create(model="embed-small", input="cache me")
    second = client.embeddings.with_raw_response.create(model="embed-small", input="cache me")
    assert first.headers["X-Gateway-Cache"] == "miss"
    assert (second.headers["X-Gateway-Cache"], second.headers["X-Gateway-Cost-USD"]) == ("hit", "0")
    assert second.parse().data[0].embedding == first.parse().data[0].embedding
    assert len(openai_server.requests) == 1
    rows = drained()
    assert [r.cache for r in rows] == ["miss", "hit"]
    assert rows[1].saved_usd == rows[0].cost_usd > 0


def test_fallback_goes_only_to_a_model_of_the_same_dimensions(gateway_server, world, openai_server):
    openai_server.script(fail(503))
    raw = sdk(gateway_server, world, **{"X-Gateway-Cache-TTL": "0"}).embeddings.with_raw_response
    answer = raw.create(model="embed-small", input="fall back")
    assert answer.headers["X-Gateway-Model"] == "embed-twin"  # not embed-large (3072)
    assert [r.body["model"] for r in openai_server.requests] == [
        "text-embedding-3-small",
        "twin-1536",
    ]
    assert len(answer.parse().data[0].embedding) == 1536


def test_the_hold_is_reserved_and_a_hard_budget_refuses(gateway_server, world, openai_server):
    # The hold is the input's bytes at the input price: 8,000 ASCII characters hold
    # 8,000 tokens x $0.02/M = $0.00016, past the $0.0001 budget; 400 hold $0.000008.
    make_budget(world["team"], daily_limit_usd="0.0001", hard=True)
    client = sdk(gateway_server, world)
    with pytest.raises(openai.RateLimitError) as refused:
        client.embeddings.create(model="embed-small", input="x" * 8000)
    assert refused.value.body["code"] == "budget_exceeded"
    assert openai_server.requests == []
    answer = client.embeddings.create(model="embed-small", input="x" * 400)
    assert answer.usage.prompt_tokens == 100
    rows = drained()
    assert [(r.endpoint, r.status) for r in rows] == [
        ("embeddings", "refused"),
        ("embeddings", "ok"),
    ]
    assert rows[1].cost_usd == Decimal("0.000002")
    status = httpx.get(
        f"{gateway_server.base_url}/budget",
        headers={"Authorization": f"Bearer {world['secret']}"},
    ).json()
    [daily] = [w for w in status["budgets"][0]["windows"] if w["window"] == "daily"]
    # Settled at the actual cost, the hold released.
    assert (Decimal(daily["spent_usd"]), Decimal(daily["reserved_usd"])) == (Decimal("0.000002"), 0)


def test_the_simulated_provider_gives_deterministic_vectors(gateway_server, world):
    client = sdk(gateway_server, world, **{"X-Gateway-Cache-TTL": "0"})
    one = client.embeddings.create(model="sim-embed", input=["a", "b"], encoding_format="float")
    two = client.embeddings.create(model="sim-embed", input=["a", "b"], encoding_format="float")
    assert [d.embedding for d in one.data] == [d.embedding for d in two.data]
    assert one.data[0].embedding != one.data[1].embedding
    assert len(one.data[0].embedding) == 8
    assert math.isclose(sum(x * x for x in one.data[0].embedding), 1, rel_tol=1e-4)


def test_a_model_on_the_wrong_endpoint_gets_a_400_that_says_so(gateway_server, world):
    client = sdk(gateway_server, world)
    with pytest.raises(openai.BadRequestError) as chat_model:
        client.embeddings.create(model="gpt-4o", input="hello")
    assert chat_model.value.body["code"] == "wrong_endpoint"
    assert "/v1/chat/completions" in chat_model.value.body["message"]
    with pytest.raises(openai.BadRequestError) as embedding_model:
        client.chat.completions.create(
            model="embed-small", messages=[{"role": "user", "content": "hi"}]
        )
    assert embedding_model.value.body["code"] == "wrong_endpoint"
    assert "/v1/embeddings" in embedding_model.value.body["message"]
    with pytest.raises(openai.BadRequestError) as anthropic:
        client.embeddings.create(model="claude-embed", input="hello")
    assert "not served by model claude-embed (anthropic)" in anthropic.value.body["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "embed-small"}, "input"),
        ({"model": "embed-small", "input": ""}, "input"),
        ({"model": "embed-small", "input": []}, "input"),
        ({"model": "embed-small", "input": [1, "a"]}, "input"),
        ({"model": "embed-small", "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": "embed-small", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a"}, "model"),
    ],
)
def test_bad_embeddings_requests_get_a_400_naming_the_parameter(gateway_server, world, body, param):
    answer = httpx.post(
        f"{gateway_server.base_url}/embeddings",
        json=body,
        headers={"Authorization": f"Bearer {world['secret']}", "X-Gateway-Feature": "search"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param
    [row] = drained()
    assert (row.endpoint, row.status, row.http_status) == ("embeddings", "error", 400)
