"""Redaction of stored prompt and response text (only for teams that opt in to storing it)."""

from __future__ import annotations

import re
from typing import Any

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Provider and gateway keys (sk-…, sk-ant-…, gw-…), bearer tokens and long opaque secrets.
KEY_LIKE = re.compile(
    r"\b(?:sk|gw|pk|rk)-[A-Za-z0-9_\-]{8,}|\bBearer\s+[A-Za-z0-9._\-]{8,}|\b[A-Za-z0-9_\-]{32,}\b"
)


def redact_text(text: str) -> str:
    return KEY_LIKE.sub("[REDACTED_KEY]", EMAIL.sub("[REDACTED_EMAIL]", text))


def redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    return value
