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


# Provider error text is scrubbed before the ledger keeps it or a client sees it (a
# caller's-fault 400 keeps its message): key-like fragments as above, and anything that names
# where the gateway's upstreams live. URLs of any scheme, IPv4 addresses, `host:port`, names
# under private suffixes (.internal, .local, .lan, .corp, .svc, .cluster.local, ...),
# `localhost`, and the provider's own configured host. Dotted parameter paths such as
# `messages.0.content` are kept: they are the caller's own and tell it what to fix.
URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>]+")
IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b")
HOST_PORT = re.compile(r"\b[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?:\d{2,5}\b")
PRIVATE_HOST = re.compile(
    r"\b(?:[A-Za-z0-9\-]+\.)+(?:internal|local|localdomain|lan|corp|intranet|private|svc"
    r"|cluster\.local|home\.arpa)\b(?::\d{1,5})?|\blocalhost\b(?::\d{1,5})?",
    re.IGNORECASE,
)


def scrub_provider_text(text: str, *, host: str = "") -> str:
    """Provider error text with secrets and internal addresses taken out."""
    if host and host in text:
        text = text.replace(host, "[REDACTED_HOST]")
    text = URL.sub("[REDACTED_URL]", text)
    text = IPV4.sub("[REDACTED_HOST]", text)
    text = PRIVATE_HOST.sub("[REDACTED_HOST]", text)
    text = HOST_PORT.sub("[REDACTED_HOST]", text)
    return KEY_LIKE.sub("[REDACTED_KEY]", text)


def scrub_provider_value(value: Any, *, host: str = "") -> Any:
    """`scrub_provider_text` applied to every string of a parsed JSON value."""
    if isinstance(value, str):
        return scrub_provider_text(value, host=host)
    if isinstance(value, list):
        return [scrub_provider_value(v, host=host) for v in value]
    if isinstance(value, dict):
        return {k: scrub_provider_value(v, host=host) for k, v in value.items()}
    return value
