"""Redaction of stored prompt and response text (only for teams that opt in to storing it).

Stored text is also made storable: PostgreSQL's text and jsonb cannot hold a NUL character
(U+0000), so each one, in a value or in a key, is stored as the six characters `\\u0000`
(the JSON escape, now as visible text). The provider still gets the request as it was sent.
"""

from __future__ import annotations

import re
from typing import Any

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Provider and gateway keys (sk-…, sk-ant-…, gw-…), bearer tokens and long opaque secrets.
KEY_LIKE = re.compile(
    r"\b(?:sk|gw|pk|rk)-[A-Za-z0-9_\-]{8,}|\bBearer\s+[A-Za-z0-9._\-]{8,}|\b[A-Za-z0-9_\-]{32,}\b"
)


NUL = "\x00"
NUL_ESCAPED = "\\u0000"


def storable(text: str) -> str:
    """`text` without NUL characters, each written as the visible escape `\\u0000`."""
    return text.replace(NUL, NUL_ESCAPED) if NUL in text else text


def redact_text(text: str) -> str:
    return storable(KEY_LIKE.sub("[REDACTED_KEY]", EMAIL.sub("[REDACTED_EMAIL]", text)))


def redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, dict):
        return {storable(k) if isinstance(k, str) else k: redact(v) for k, v in value.items()}
    return value
