"""Every failure of a provider call as one `ProviderError`: HTTP error answers, transport
exceptions and streams cut short, with what a client may read of each."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import httpx
import orjson

from gateway.redaction import scrub_provider_text, scrub_provider_value


class ProviderError(Exception):
    """Every failure of a provider call, mapped once (see `error_from_response`).

    `retryable` failures move the request to the next model in the chain; the others are the
    caller's own fault and are returned to it as they are.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        kind: str = "provider_error",
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason  # a gateway-written public reason, more precise than the kind's
        self.retryable = retryable
        self.status = status
        self.kind = kind  # timeout, connection_error, rate_limited, overloaded, server_error,
        #                    bad_response, invalid_request, auth_error, stream_cut
        self.body = body
        self.retry_after = retry_after

    @property
    def public(self) -> str:
        """What a client may read about this failure: a generic reason per kind, never the
        provider's own text (it can quote our key, name internal hosts or hold a traceback).
        A caller's-fault refusal keeps its message, already scrubbed (`error_from_response`).
        """
        if not self.retryable and self.kind == "invalid_request":
            return self.message
        return self.reason or public_reason(self.kind, self.status)


_PUBLIC_REASONS = {
    "auth_error": "upstream authentication failed",
    "rate_limited": "upstream rate limited",
    "overloaded": "upstream overloaded",
    "timeout": "upstream timed out",
    "connection_error": "upstream connection error",
    "bad_response": "upstream sent a malformed answer",
    "stream_cut": "upstream stream ended early",
}


def public_reason(kind: str, status: int | None) -> str:
    if kind in _PUBLIC_REASONS:
        return _PUBLIC_REASONS[kind]
    return f"upstream error {status}" if status else "upstream error"


RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_STATUS_KINDS = {429: "rate_limited", 529: "overloaded", 401: "auth_error", 403: "auth_error"}


def error_from_response(
    provider: str,
    status: int,
    text: str,
    headers: httpx.Headers | None = None,
    *,
    secret: str = "",
    base_url: str = "",
) -> ProviderError:
    """Map an HTTP error answer from any provider to a ProviderError.

    `secret` (the provider's API key) is blanked out of the text first: some providers echo
    the key they were given. Then every string of the answer is scrubbed
    (`redaction.scrub_provider_text`: key-like fragments, URLs, internal hosts, the
    provider's own host), since the message is kept in the ledger and, for a caller's-fault
    refusal, returned to the client. Other failures reach clients only as `public`.
    """
    if secret and secret in text:
        text = text.replace(secret, "[redacted]")
    try:
        body = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        body = None
    host = parsed_url(base_url).host if base_url else ""
    body = scrub_provider_value(body, host=host)
    text = scrub_provider_text(text, host=host)
    detail = _error_message(body) or text[:200] or f"HTTP {status}"
    retry_after = None
    if headers is not None and headers.get("retry-after"):
        try:
            retry_after = float(headers["retry-after"])
        except ValueError:
            retry_after = None
    # A provider answering 401/403 means *our* key is wrong: that is not the caller's fault,
    # so another provider may still serve the request.
    retryable = status in RETRYABLE_STATUSES or status >= 500 or status in (401, 403)
    kind = _STATUS_KINDS.get(status, "server_error" if status >= 500 else "invalid_request")
    return ProviderError(
        f"{provider}: HTTP {status}: {detail}",
        retryable=retryable,
        status=status,
        kind=kind,
        body=body if isinstance(body, dict) else None,
        retry_after=retry_after,
    )


def error_from_exception(provider: str, exc: Exception) -> ProviderError:
    """Map a transport exception (timeout, refused connection, bad body) to a ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(
            f"{provider}: timed out ({type(exc).__name__})", retryable=True, kind="timeout"
        )
    if isinstance(exc, httpx.TransportError):
        return ProviderError(
            f"{provider}: connection error ({type(exc).__name__})",
            retryable=True,
            kind="connection_error",
        )
    if isinstance(exc, (ValueError, KeyError, TypeError, IndexError, AttributeError)):
        why = scrub_provider_text(str(exc)[:200])
        return ProviderError(
            f"{provider}: malformed response ({type(exc).__name__}: {why})",
            retryable=True,
            kind="bad_response",
        )
    return ProviderError(f"{provider}: {type(exc).__name__}", retryable=True, kind="provider_error")


def _error_message(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("type") or "")
        if isinstance(err, str):
            return err
        if isinstance(body.get("message"), str):
            return body["message"]
    return ""


@lru_cache(maxsize=256)
def parsed_url(url: str) -> httpx.URL:
    """Provider URLs are few and fixed: parse each once (httpx.URL is immutable)."""
    return httpx.URL(url)


def stream_cut(provider: str, why: str) -> ProviderError:
    """The upstream stream ended before the provider said it was complete."""
    return ProviderError(
        f"{provider}: stream ended early ({why})", retryable=True, kind="stream_cut"
    )
