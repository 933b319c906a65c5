"""Prompt and response text stay out of the ledger unless the team opts in, and then
e-mail addresses and key-like strings are redacted."""

from __future__ import annotations

import asyncio

import pytest
from django.test import AsyncClient

from gateway import ledger
from gateway.models import UsageRecord
from tests.factories import make_feature, make_key, make_model, make_provider, make_team

pytestmark = pytest.mark.django_db(transaction=True)
PROMPT = "Mail jane.doe@example.com the key sk-proj-abcdefghijklmnop1234 please"


def setup(store_content: bool) -> str:
    team = make_team("acme", store_content=store_content)
    make_feature(team, "chatbot")
    make_model("sim-model", make_provider())
    return make_key(team)[1]


async def ask(secret: str) -> None:
    response = await AsyncClient().post(
        "/v1/chat/completions",
        {"model": "sim-model", "messages": [{"role": "user", "content": PROMPT}]},
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}", "X-Gateway-Feature": "chatbot"},
    )
    assert response.status_code == 200
    await asyncio.to_thread(ledger.drain)


async def test_text_is_not_stored_by_default():
    await ask(await asyncio.to_thread(setup, False))
    record = await UsageRecord.objects.aget()
    assert record.content is None


async def test_a_team_that_opts_in_stores_redacted_text():
    await ask(await asyncio.to_thread(setup, True))
    record = await UsageRecord.objects.aget()
    stored = record.content["messages"][0]["content"]
    assert "jane.doe@example.com" not in stored and "sk-proj-" not in stored
    assert "[REDACTED_EMAIL]" in stored and "[REDACTED_KEY]" in stored
    assert record.content["response"]["choices"][0]["message"]["content"]
