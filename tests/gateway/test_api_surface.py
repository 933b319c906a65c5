"""The API's edges with the official `openai` SDK: `models.retrieve`, the mode each model
serves in /v1/models, and JSON 404s in OpenAI's envelope for every path the gateway does not
serve (legacy /v1/completions says so)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.factories import make_key, make_model, make_provider, make_team

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def secret():
    team = make_team("acme")
    _key, secret = make_key(team)
    sim = make_provider("sim", kind="simulated", options={"latency_ms": 0})
    make_model("sim-model", sim)
    make_model("sim-embed", sim, output_price="0", mode="embedding", dimensions=8)
    make_model("off", sim, enabled=False)
    return secret


def sdk(server, secret) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=secret, max_retries=0)


def test_models_retrieve_returns_one_model_with_its_mode(gateway_server, secret):
    model = sdk(gateway_server, secret).models.retrieve("sim-embed")
    assert (model.id, model.object, model.owned_by) == ("sim-embed", "model", "sim")
    assert (model.mode, model.dimensions) == ("embedding", 8)
    listed = {m.id: m.mode for m in sdk(gateway_server, secret).models.list()}
    assert listed == {"sim-model": "chat", "sim-embed": "embedding"}


@pytest.mark.parametrize("name", ["no-such-model", "off"])
def test_models_retrieve_of_an_unknown_or_disabled_model_is_a_404(gateway_server, secret, name):
    with pytest.raises(openai.NotFoundError) as missing:
        sdk(gateway_server, secret).models.retrieve(name)
    assert missing.value.body["code"] == "model_not_found"
    assert name in missing.value.body["message"]


def test_models_retrieve_needs_a_key(gateway_server, secret):
    with pytest.raises(openai.AuthenticationError):
        sdk(gateway_server, "gw-wrong").models.retrieve("sim-model")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nothing"), ("POST", "/v1/audio/speech"), ("GET", "/v1/chat"), ("GET", "/v1/")],
)
def test_an_unknown_path_under_v1_is_a_json_404(gateway_server, secret, method, path):
    answer = httpx.request(
        method,
        gateway_server.base_url[: -len("/v1")] + path,
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "unknown_url")
    assert path in error["message"]


def test_legacy_completions_is_a_json_404_that_says_it_is_not_served(gateway_server, secret):
    with pytest.raises(openai.NotFoundError) as legacy:
        sdk(gateway_server, secret).completions.create(model="sim-model", prompt="Say hi")
    assert legacy.value.body["code"] == "legacy_completions_not_served"
    assert "/v1/chat/completions" in legacy.value.body["message"]
