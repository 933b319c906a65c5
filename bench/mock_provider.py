"""A fast loopback mock LLM provider for the benchmarks (never used by the tests).

Raw asyncio protocol on uvloop with httptools' C parser, HTTP/1.1 keep-alive. It speaks:
- POST /v1/chat/completions: OpenAI JSON, or SSE when "stream": true (a usage chunk when
  stream_options.include_usage is set, then `data: [DONE]`);
- POST /v1/messages: Anthropic JSON, or its SSE event sequence when "stream": true;
- POST /v1/responses: OpenAI's Responses JSON (JSON only: the benches do not stream it);
- GET /health.
`--latency-ms` delays the response headers (the upstream's time to first byte); streams then
send `--chunks` content chunks `--chunk-interval-ms` apart. One process, one core at most:
measured at ~20k req/s with wrk on this 2-core machine (bench/README.md), far above what a
gateway in front of it reaches, so the mock never is the bottleneck.

    .venv/bin/python bench/mock_provider.py --port 9101 --latency-ms 0
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import socket
import time

import httptools
import orjson
import uvloop

WORDS = ("Hello", " from", " the", " loopback", " mock", " provider", ".", " It", " is", " fast")
PROMPT_TOKENS, COMPLETION_TOKENS = 12, 10


class Config:
    def __init__(self, latency_ms: float, chunks: int, chunk_interval_ms: float) -> None:
        self.latency = latency_ms / 1000
        self.chunks = chunks
        self.interval = chunk_interval_ms / 1000
        self.ids = itertools.count(1)


def _head(status: int, content_type: str, length: int | None) -> bytes:
    reason = {200: "OK", 404: "Not Found", 400: "Bad Request"}[status]
    lines = [f"HTTP/1.1 {status} {reason}", f"content-type: {content_type}"]
    if length is None:
        lines += ["transfer-encoding: chunked", "cache-control: no-cache"]
    else:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


EMBEDDING = [round((i % 17) / 17 - 0.5, 6) for i in range(1536)]  # one 1,536-float vector


def openai_embeddings(model: str, request: dict) -> bytes:
    """OpenAI's embeddings answer: one 1,536-float vector per input, 8 tokens each."""
    value = request.get("input") or ""
    count = 1 if isinstance(value, str) or (value and isinstance(value[0], int)) else len(value)
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": EMBEDDING} for i in range(count)
            ],
            "model": model,
            "usage": {"prompt_tokens": 8 * count, "total_tokens": 8 * count},
        }
    )


def openai_json(model: str, n: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"chatcmpl-mock{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(WORDS)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
        }
    )


def openai_events(model: str, n: int, chunks: int, usage: bool) -> list[bytes]:
    base = {"id": f"chatcmpl-mock{n}", "object": "chat.completion.chunk", "created": 0}
    base["model"] = model
    out = []
    for i in range(chunks):
        delta = {"content": WORDS[i % len(WORDS)]}
        if i == 0:
            delta["role"] = "assistant"
        out.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        u = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": chunks}
        u["total_tokens"] = PROMPT_TOKENS + chunks
        out.append({**base, "choices": [], "usage": u})
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in out] + [b"data: [DONE]\n\n"]


def anthropic_json(model: str, n: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"msg_mock{n}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "".join(WORDS)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": COMPLETION_TOKENS},
        }
    )


def anthropic_events(model: str, n: int, chunks: int) -> list[bytes]:
    start = {"id": f"msg_mock{n}", "type": "message", "role": "assistant", "model": model}
    start.update(
        content=[], stop_reason=None, usage={"input_tokens": PROMPT_TOKENS, "output_tokens": 1}
    )
    events = [("message_start", {"type": "message_start", "message": start})]
    events.append(
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
    )
    for i in range(chunks):
        delta = {"type": "text_delta", "text": WORDS[i % len(WORDS)]}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": chunks},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return [b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(d)) for name, d in events]


def responses_json(model: str, n: int) -> bytes:
    text = {"type": "output_text", "text": "".join(WORDS), "annotations": []}
    message = {"type": "message", "id": f"msg_mock{n}", "status": "completed"}
    message.update(role="assistant", content=[text])
    usage = {"input_tokens": PROMPT_TOKENS, "input_tokens_details": {"cached_tokens": 0}}
    usage.update(output_tokens=COMPLETION_TOKENS, total_tokens=PROMPT_TOKENS + COMPLETION_TOKENS)
    return orjson.dumps(
        {
            "id": f"resp_mock{n}",
            "object": "response",
            "created_at": 0,
            "status": "completed",
            "model": model,
            "output": [message],
            "usage": usage,
        }
    )


class MockProtocol(asyncio.Protocol):
    def __init__(self, config: Config) -> None:
        self.config = config
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.queue: asyncio.Queue | None = None  # requests of one connection answered in order
        self.worker: asyncio.Task | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small SSE writes must not wait for Nagle's algorithm
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(_head(400, "text/plain", 0))
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method, path, body = self.parser.get_method(), self.url.split(b"?")[0], b"".join(self.body)
        self.url, self.body = b"", []
        if self.config.latency == 0 and self.queue is None and b'"stream"' not in body:
            self.transport.write(self.answer_now(method, path, body))  # the fast path
            return
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.worker = asyncio.get_running_loop().create_task(self.serve_queue())
        self.queue.put_nowait((method, path, body))

    async def serve_queue(self) -> None:
        while self.transport is not None:
            method, path, body = await self.queue.get()
            if self.config.latency:
                await asyncio.sleep(self.config.latency)
            request = orjson.loads(body) if method == b"POST" and body else {}
            if isinstance(request, dict) and request.get("stream") and self.transport:
                await self.stream(path, request)
            elif self.transport is not None:
                self.transport.write(self.answer_now(method, path, body))

    def answer_now(self, method: bytes, path: bytes, body: bytes) -> bytes:
        if method == b"GET" and path == b"/health":
            return _head(200, "text/plain", 2) + b"ok"
        request = orjson.loads(body) if body else {}
        model, n = str(request.get("model", "mock")), next(self.config.ids)
        if path.endswith(b"/chat/completions"):
            payload = openai_json(model, n)
        elif path.endswith(b"/messages"):
            payload = anthropic_json(model, n)
        elif path.endswith(b"/embeddings"):
            payload = openai_embeddings(model, request)
        elif path.endswith(b"/responses"):
            payload = responses_json(model, n)
        else:
            return _head(404, "application/json", 2) + b"{}"
        return _head(200, "application/json", len(payload)) + payload

    async def stream(self, path: bytes, request: dict) -> None:
        model, n = str(request.get("model", "mock")), next(self.config.ids)
        if path.endswith(b"/messages"):
            events = anthropic_events(model, n, self.config.chunks)
        else:
            usage = bool((request.get("stream_options") or {}).get("include_usage"))
            events = openai_events(model, n, self.config.chunks, usage)
        head = _head(200, "text/event-stream", None)
        if not self.config.interval:  # no pacing asked: one write, as a fast upstream would
            self.transport.write(head + b"".join(_chunk(e) for e in events) + b"0\r\n\r\n")
            return
        self.transport.write(head)
        for i, event in enumerate(events):
            if i and self.config.interval and i <= self.config.chunks:
                await asyncio.sleep(self.config.interval)
            if self.transport is None:
                return
            self.transport.write(_chunk(event))
        self.transport.write(b"0\r\n\r\n")


async def serve(host: str, port: int, config: Config) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(config), host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=5, help="content chunks per stream")
    parser.add_argument("--chunk-interval-ms", type=float, default=0.0)
    args = parser.parse_args()
    config = Config(args.latency_ms, args.chunks, args.chunk_interval_ms)
    uvloop.run(serve(args.host, args.port, config))


if __name__ == "__main__":
    main()
