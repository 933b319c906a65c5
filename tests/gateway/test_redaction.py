"""Redaction of stored content: addresses, keys and tokens go, ordinary text stays."""

from __future__ import annotations

import pytest

from gateway.redaction import redact, redact_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+work@example.co.uk today", "write to [REDACTED_EMAIL] today"),
        ("key sk-proj-AbCdEf1234567890 leaked", "key [REDACTED_KEY] leaked"),
        ("anthropic sk-ant-api03-xyzXYZ_12345", "anthropic [REDACTED_KEY]"),
        ("gateway gw-4f9a8b7c6d5e", "gateway [REDACTED_KEY]"),
        ("Authorization: Bearer eyJhbGciOi.J9xyz.abc-def", "Authorization: [REDACTED_KEY]"),
        ("token " + "a1B2" * 10, "token [REDACTED_KEY]"),
    ],
)
def test_secrets_and_addresses_are_redacted(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of France? Paris, at 48.8566° N.",
        "Use the sk- prefix and a Bearer scheme; email me at the office.",
        "def task(): return {'risk': 'low', 'id': 42}",
        "antidisestablishmentarianism and snake_case_identifiers_here",
        "",
    ],
)
def test_ordinary_text_is_left_untouched(text):
    assert redact_text(text) == text


def test_nested_messages_are_redacted_and_other_values_kept():
    value = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "me@x.io"}]}],
        "temperature": 0.5,
        "n": None,
        "tools": ["gw-AAAABBBBCCCC"],
    }
    assert redact(value) == {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "[REDACTED_EMAIL]"}]}],
        "temperature": 0.5,
        "n": None,
        "tools": ["[REDACTED_KEY]"],
    }
