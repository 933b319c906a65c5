"""Server-sent events of an upstream body, parsed from its bytes as they arrive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

BODY_END_WAIT_S = 0.1
MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # a provider's `max_response_bytes` option by default
MAX_STREAM_BYTES = 64 * 1024 * 1024  # a provider's `max_stream_bytes` option by default


async def until_body_ends(events: AsyncIterator[tuple[str, bytes]]) -> None:
    """Read on after a stream's last event (`[DONE]`, or one of the adapter's
    `final_events`) until the body itself ends, for at most BODY_END_WAIT_S.

    The adapter stops at that event, and the end of a chunked body (its empty last chunk)
    often arrives in a read of its own, a moment later. A response closed before its body
    ended cannot give its connection back to the pool, so every stream cost the next request
    a new connection: a TCP and a TLS handshake before its first token. Anything after the
    last event is ignored; a body that does not end in time is closed as before, and the
    answer, complete already, is not failed for it.
    """
    try:
        async with asyncio.timeout(BODY_END_WAIT_S):
            async for _ in events:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


async def sse_events(
    resp: httpx.Response, limit: int = 0, too_large: Any = None
) -> AsyncIterator[tuple[str, bytes]]:
    """The server-sent events of a body, as (event name, data), parsed from its bytes as they
    arrive: no text decoding or line splitting of httpx's per line, and the data goes to
    orjson as bytes. Lines end in CRLF, LF or CR (the SSE spec allows all three).
    Past `limit` bytes in all (0: no limit) raises `too_large()`."""
    buffer = b""
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if limit and size > limit:
            raise too_large()
        buffer = buffer + chunk if buffer else chunk
        if b"\r" in buffer:
            held = b""
            if buffer.endswith(b"\r"):  # maybe the first half of a CRLF: wait for the rest
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + held
        if b"\n\n" in buffer:
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                if parsed := sse_event(block):
                    yield parsed
    if buffer.endswith(b"\n\r"):  # the stream ended on a CR-terminated blank line
        if parsed := sse_event(buffer[:-2]):
            yield parsed
    # Any other event the stream ended in the middle of is dropped, as the spec says.


def sse_event(block: bytes) -> tuple[str, bytes] | None:
    if block.startswith(b"data: ") and b"\n" not in block:  # nearly every event
        return "", block[6:]
    event, data = "", []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", "replace")
    return (event, b"\n".join(data)) if data else None
