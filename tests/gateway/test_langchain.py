"""LangChain's default structured output, end to end: `langchain-openai`'s `ChatOpenAI`
→ the gateway on a loopback port → loopback servers speaking the real wire formats.

`with_structured_output(PydanticModel)` sends a strict `response_format` json_schema and
parses the message content; on Claude the gateway answers it with a forced tool (issue 19).
Offline: nothing here counts tokens, so tiktoken never downloads its encodings."""

from __future__ import annotations

import orjson
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.factories import (
    make_feature,
    make_key,
    make_loopback_providers,
    make_model,
    make_team,
)
from tests.loopback import ok, tool_call

pytestmark = pytest.mark.django_db(transaction=True)
QUESTION = "Which is the capital of France, and how many live there?"
PARIS = {"city": "Paris", "population": 2102650}


class City(BaseModel):
    city: str
    population: int


@pytest.fixture
def secret(openai_server, anthropic_server, monkeypatch):
    team = make_team("acme")
    make_feature(team, "chatbot")
    _, secret = make_key(team)
    oa, an = make_loopback_providers(openai_server, anthropic_server, monkeypatch)
    make_model("gpt-4o-mini", oa)
    make_model("claude-haiku", an)
    return secret


def structured(gateway_server, secret: str, model: str):
    chat = ChatOpenAI(
        model=model,
        base_url=gateway_server.base_url,
        api_key=secret,
        max_retries=0,
        default_headers={"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "0"},
    )
    return chat.with_structured_output(City)  # the default method


def test_langchain_structured_output_gets_its_object_from_claude(
    gateway_server, secret, anthropic_server
):
    # The loopback answers the forced tool like Claude: one tool_use block.
    anthropic_server.script(tool_call("City", PARIS))
    answer = structured(gateway_server, secret, "claude-haiku").invoke(QUESTION)
    assert answer == City(**PARIS)
    (sent,) = anthropic_server.requests
    assert sent.body["tool_choice"] == {"type": "tool", "name": "City"}
    assert set(sent.body["tools"][0]["input_schema"]["properties"]) == {"city", "population"}


def test_langchain_structured_output_gets_its_object_from_gpt(
    gateway_server, secret, openai_server
):
    openai_server.script(ok(orjson.dumps(PARIS).decode()))
    answer = structured(gateway_server, secret, "gpt-4o-mini").invoke(QUESTION)
    assert answer == City(**PARIS)
    (sent,) = openai_server.requests
    assert sent.body["response_format"]["type"] == "json_schema"
    assert sent.body["response_format"]["json_schema"]["name"] == "City"
