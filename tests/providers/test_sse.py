"""The server-sent events parser the adapters share, fed as a provider's bytes arrive."""

from __future__ import annotations

import httpx
import pytest

from gateway.providers.sse import sse_events

STREAM = (
    b": a comment, ignored\n"
    b'data: {"n": 1}\n\n'
    b"event: message_delta\n"
    b'data: {"n": 2,\n'
    b'data: "more": "h\xc3\xa9"}\n\n'
    b"retry: 100\n"
    b"data:[DONE]\n\n"
)
EVENTS = [
    ("", b'{"n": 1}'),
    ("message_delta", b'{"n": 2,\n"more": "h\xc3\xa9"}'),
    ("", b"[DONE]"),
]


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self):
        for chunk in self.chunks:
            yield chunk


async def events(*chunks: bytes) -> list[tuple[str, bytes]]:
    response = httpx.Response(200, stream=Chunks(list(chunks)))
    return [event async for event in sse_events(response)]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
async def test_every_line_ending_and_every_split_point_give_the_same_events(newline):
    body = STREAM.replace(b"\n", newline)
    assert await events(body) == EVENTS
    for cut in range(1, len(body)):
        assert await events(body[:cut], body[cut:]) == EVENTS, cut
    assert await events(*(body[i : i + 1] for i in range(len(body)))) == EVENTS


async def test_an_event_cut_off_by_the_end_of_the_stream_is_dropped():
    assert await events(b'data: {"n": 1}\n\ndata: {"n": 2}\n') == [("", b'{"n": 1}')]
    assert await events(b'data: {"n": 1}\r\rdata: {"n"') == [("", b'{"n": 1}')]


async def test_a_stream_ending_on_a_cr_blank_line_ends_its_last_event():
    assert await events(b"data: [DONE]\r\r") == [("", b"[DONE]")]
