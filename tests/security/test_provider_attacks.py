"""Issue 16, the provider's side: a provider answering nonsense, absurd usage, secrets in its
error text or endless bodies, reproduced as the attack was made: over HTTP against the gateway
served by uvicorn (tests/processes.py), on PostgreSQL and Redis, with a loopback provider that
answers whatever bytes the test scripts.

What must hold each time: the client gets OpenAI's envelope with an X-Request-ID (a fallback
answer or a clear error, never a 500), nothing absurd is billed, the budget hold is released
(`GET /v1/budget` shows nothing reserved) and the ledger has the request's record.
"""

from __future__ import annotations

import collections
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import orjson
import pytest

from gateway import ledger, streaming
from gateway.models import UsageRecord
from gateway.operations import chat
from tests.factories import (
    make_budget,
    make_key,
    make_model,
    make_provider,
    make_team,
    set_fallbacks,
)
from tests.gateway_server import GatewayServer
from tests.processes import GatewayProcess, requires_postgres, requires_real_redis

pytestmark = [requires_postgres, requires_real_redis, pytest.mark.django_db(transaction=True)]

HELLO = [{"role": "user", "content": "Say hello."}]
KEY_ENV = {"openai": "TEST_OPENAI_API_KEY", "openai_compatible": "TEST_OPENAI_API_KEY",
           "anthropic": "TEST_ANTHROPIC_API_KEY"}  # fmt: skip


# A provider that answers each request with the next scripted raw HTTP response.


def raw(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
    return (head + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def as_json(status: int, value: object) -> bytes:
    return raw(status, orjson.dumps(value))


def sse(*events: object) -> bytes:
    """A 200 event stream, ended by closing the connection (no content-length)."""
    body = b"".join(
        e if isinstance(e, bytes) else b"data: " + orjson.dumps(e) + b"\n\n" for e in events
    )
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    return head + body


class RawProvider:
    """127.0.0.1:<port>; `script(*responses)`; answers "ok" completions once it runs out."""

    def __init__(self, fallback: Callable[[dict], bytes]) -> None:
        self.script_ = collections.deque()
        self.requests: list[dict] = []
        self.fallback = fallback
        provider = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = self.rfile.readline()
                    if not line:
                        return
                    head += line
                size = 0
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        size = int(line.split(":", 1)[1])
                body = orjson.loads(self.rfile.read(size)) if size else {}
                provider.requests.append(body)
                answer = provider.script_.popleft() if provider.script_ else None
                parts = answer if isinstance(answer, list) else [answer or provider.fallback(body)]
                for i, part in enumerate(parts):  # a list: its parts 0.2 s apart
                    if i:
                        time.sleep(0.2)
                    self.wfile.write(part)
                    self.wfile.flush()

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, *answers: bytes | list[bytes]) -> None:
        self.script_.extend(answers)


def completion(text: str = "Hello there.", **usage: object) -> dict:
    return {
        "id": "chatcmpl-raw",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],  # fmt: skip
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13, **usage},
    }


def chunk(content: str | None = None, finish: str | None = None, **extra: object) -> dict:
    delta = {"content": content} if content is not None else {}
    return {
        "id": "chatcmpl-raw",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def good_stream(usage: dict | None = None) -> bytes:
    usage = usage or {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    return sse(
        chunk(""),
        chunk("Hello there, streamed."),
        chunk(finish="stop"),
        {**chunk(), "choices": [], "usage": usage},
        b"data: [DONE]\n\n",
    )


def anthropic_message(**usage: object) -> dict:
    return {
        "id": "msg_raw",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": "Hello there."}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 3, **usage},
    }


def openai_fallback(body: dict) -> bytes:
    return good_stream() if body.get("stream") else as_json(200, completion())


@pytest.fixture
def upstream() -> Iterator[RawProvider]:
    provider = RawProvider(openai_fallback)
    provider.thread.start()
    yield provider
    provider.server.shutdown()
    provider.server.server_close()


@pytest.fixture
def good() -> Iterator[RawProvider]:
    provider = RawProvider(openai_fallback)
    provider.thread.start()
    yield provider
    provider.server.shutdown()
    provider.server.server_close()


@pytest.fixture
def gateway(tmp_path, settings) -> Iterator[GatewayProcess]:
    process = GatewayProcess(redis_url=settings.REDIS_URL, log_dir=tmp_path)
    try:
        yield process.wait_ready()
    finally:
        process.stop()


KINDS = ("openai", "openai_compatible", "anthropic")


def setup_models(upstream: RawProvider, good: RawProvider, *, kinds=("openai",), **options):
    """Team `acme` with a hard $1/day budget; for each kind, model `bad-<kind>` (on
    `upstream`) falls back to `good`, and `alone-<kind>` (on `upstream`) has no fallback.
    Returns the key's secret."""
    team = make_team("acme")
    make_budget(team, daily_limit_usd=1, monthly_limit_usd=20, hard=True)
    fine = make_provider("fine", kind="openai", base_url=good.url + "/v1",
                         api_key_env="TEST_OPENAI_API_KEY", options={})  # fmt: skip
    target = make_model("good", fine)
    for kind in kinds:
        base = upstream.url + ("" if kind == "anthropic" else "/v1")
        provider = make_provider(f"nonsense-{kind}", kind=kind, base_url=base,
                                 api_key_env=KEY_ENV[kind], options=options)  # fmt: skip
        limits = {"context_window": 8000, "max_output_tokens": 1000}
        bad = make_model(f"bad-{kind}", provider, **limits)
        make_model(f"alone-{kind}", provider, **limits)
        set_fallbacks(bad, target)
    return make_key(team)[1]


def post(gateway: GatewayProcess | GatewayServer, secret: str, **body: object) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/chat/completions",
        json={"messages": HELLO, "max_tokens": 50, **body},
        headers={"Authorization": f"Bearer {secret}", "X-Gateway-Cache-TTL": "0"},
        timeout=30,
    )


def budget(gateway: GatewayProcess, secret: str) -> dict:
    answer = httpx.get(f"{gateway.base_url}/budget", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200, answer.text
    return answer.json()["budgets"][0]["windows"][0]  # the daily window


def record(request_id: str) -> UsageRecord:
    ledger.drain()
    return UsageRecord.objects.get(request_id=request_id)


def assert_envelope(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:500]
    assert response.headers["X-Request-ID"].startswith("req_")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# Critical, last bullets: usage is checked before it is billed.

ABSURD_USAGE = [
    {"prompt_tokens": 10**15},  # out of range for the ledger's column, $1e9 at $1/Mtok
    {"prompt_tokens": -5},
    {"completion_tokens": "12"},
    {"completion_tokens": 2.5},
    {"prompt_tokens": 8000, "completion_tokens": 1001},  # beyond 8000 context + 1000 output
]


def test_absurd_usage_is_a_bad_response_that_falls_back_and_is_never_billed(
    gateway, upstream, good
):
    secret = setup_models(upstream, good)
    for usage in ABSURD_USAGE:
        upstream.script(as_json(200, completion(**usage)))
        answer = post(gateway, secret, model="bad-openai")
        assert answer.status_code == 200, (usage, answer.text)
        assert answer.headers["X-Gateway-Model"] == "good", usage
        assert answer.json()["usage"]["prompt_tokens"] == 10
        row = record(answer.headers["X-Request-ID"])
        assert (row.served_model, row.input_tokens, row.attempts) == ("good", 10, 2)
        assert row.attempt_log[0]["error"] == "upstream sent a malformed answer"
        assert "usage" in row.attempt_log[0]["detail"]
    # Without a fallback it is a clear 502, and nothing is billed or held either.
    upstream.script(as_json(200, completion(prompt_tokens=10**15)))
    answer = post(gateway, secret, model="alone-openai")
    assert assert_envelope(answer, 502)["code"] == "all_providers_failed"
    row = record(answer.headers["X-Request-ID"])
    assert (row.status, row.input_tokens, row.cost_usd) == ("error", 0, 0)
    window = budget(gateway, secret)
    assert Decimal(window["spent_usd"]) < Decimal("0.001"), window
    assert window["reserved_usd"] == "0", window
    assert UsageRecord.objects.filter(input_tokens__gt=8000).count() == 0


def test_absurd_usage_at_the_end_of_a_stream_ends_it_in_an_error_billed_at_the_estimate(
    gateway, upstream, good
):
    secret = setup_models(upstream, good)
    upstream.script(good_stream({"prompt_tokens": 10**15, "completion_tokens": 5}))
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/chat/completions",
        json={"model": "bad-openai", "messages": HELLO, "max_tokens": 50, "stream": True},
        headers={"Authorization": f"Bearer {secret}", "X-Gateway-Cache-TTL": "0"},
        timeout=30,
    ) as answer:
        assert answer.status_code == 200
        request_id = answer.headers["X-Request-ID"]
        text = answer.read().decode()
    assert "Hello there, streamed." in text  # delivered before the usage came
    assert "stream_interrupted" in text and "upstream sent a malformed answer" in text
    assert "[DONE]" not in text
    row = record(request_id)
    assert (row.status, row.error_type, row.served_model) == (
        "stream_error",
        "bad_response",
        "bad-openai",
    )
    assert row.estimated and 0 < row.input_tokens < 100 and 0 < row.output_tokens < 100
    assert Decimal(row.cost_usd) < Decimal("0.001")
    window = budget(gateway, secret)
    assert Decimal(window["spent_usd"]) == row.cost_usd, window
    assert window["reserved_usd"] == "0", window


def stream(gateway: GatewayProcess, secret: str, model: str) -> tuple[httpx.Response, str]:
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/chat/completions",
        json={"model": model, "messages": HELLO, "max_tokens": 50, "stream": True},
        headers={"Authorization": f"Bearer {secret}", "X-Gateway-Cache-TTL": "0"},
        timeout=30,
    ) as answer:
        return answer, answer.read().decode()


def assert_nothing_held(gateway: GatewayProcess, secret: str) -> None:
    window = budget(gateway, secret)
    assert window["reserved_usd"] == "0", window
    assert Decimal(window["spent_usd"]) < Decimal("0.01"), window


# Medium 1: a malformed 200 from upstream is a retryable bad_response in every adapter.

NOT_JSON = raw(200, b"<html>upstream proxy says hi</html>", "text/html")
MALFORMED = {
    "openai": [
        as_json(200, {**completion(), "choices": ["notadict", 5]}),
        as_json(200, {**completion(), "choices": [{"index": 0, "message": {"content": 5}}]}),
        as_json(200, {**completion(), "choices": [{"index": 0, "message": "hi"}]}),
        as_json(200, {**completion(), "choices": [{"index": 0, "message": {"content": "hi",
                                                                         "tool_calls": "junk"}}]}),
        as_json(200, {**completion(), "usage": "lots"}),
        as_json(200, {"id": "chatcmpl-raw"}),
        as_json(200, [1, 2, 3]),
        NOT_JSON,
    ],
    "anthropic": [
        as_json(200, {**anthropic_message(), "content": ["notadict", 5]}),
        as_json(200, {**anthropic_message(), "content": [{"type": "text", "text": 5}]}),
        as_json(200, anthropic_message(input_tokens="10")),
        as_json(200, {"id": "msg_raw"}),
        NOT_JSON,
    ],
}  # fmt: skip
MALFORMED["openai_compatible"] = MALFORMED["openai"]


def test_a_malformed_200_is_a_bad_response_in_every_adapter(gateway, upstream, good):
    secret = setup_models(upstream, good, kinds=KINDS)
    for kind, answers in MALFORMED.items():
        for nonsense in answers:
            upstream.script(nonsense)
            answer = post(gateway, secret, model=f"bad-{kind}")
            assert answer.status_code == 200, (kind, nonsense, answer.text)
            assert answer.headers["X-Gateway-Model"] == "good"
            upstream.script(nonsense)
            answer = post(gateway, secret, model=f"alone-{kind}")
            error = assert_envelope(answer, 502)
            assert "upstream sent a malformed answer" in error["message"], (kind, nonsense)
            row = record(answer.headers["X-Request-ID"])
            assert (row.status, row.http_status, row.cost_usd) == ("error", 502, 0)
    assert_nothing_held(gateway, secret)


def test_a_malformed_stream_falls_back_before_its_first_byte_and_ends_in_an_error_after(
    gateway, upstream, good
):
    secret = setup_models(upstream, good, kinds=KINDS)
    first = {"type": "message_start", "message": {"id": "msg_raw", "model": "claude",
                                                  "usage": {"input_tokens": 10}}}  # fmt: skip
    before = {
        "openai": [sse({**chunk(""), "choices": ["notadict", 5]}), sse(b"data: {nope\n\n")],
        "anthropic": [sse({"type": "message_start", "message": "junk"})],
    }
    after = {
        "openai": sse(chunk("Hello"), {**chunk(), "choices": [{"delta": {"content": 5}}]}),
        "anthropic": sse(
            first,
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}},
        ),  # fmt: skip
    }
    for kind in ("openai", "anthropic"):
        for nonsense in before[kind]:
            upstream.script(nonsense)
            answer, text = stream(gateway, secret, f"bad-{kind}")
            assert answer.status_code == 200 and answer.headers["X-Gateway-Model"] == "good"
            assert text.endswith("data: [DONE]\n\n"), text
        upstream.script(after[kind])
        answer, text = stream(gateway, secret, f"alone-{kind}")
        assert answer.status_code == 200
        assert "stream_interrupted" in text and "[DONE]" not in text, text
        row = record(answer.headers["X-Request-ID"])
        assert (row.status, row.error_type) == ("stream_error", "bad_response")
    assert_nothing_held(gateway, secret)


# Medium 2: provider error text never reaches clients raw; the ledger keeps it, scrubbed.

LEAKY_401 = as_json(401, {"error": {
    "message": "Incorrect API key provided: sk-proj-AbCdEf0123456789xyz. You can find your "
               "API key at https://platform.openai.com/account/api-keys.",
    "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})  # fmt: skip
TRACEBACK_500 = raw(500, b'Traceback (most recent call last):\n  File "/srv/llm/app.py", line 3\n'
                    b'psycopg.OperationalError: connection to server at "db-primary.internal" '
                    b"(10.1.2.3), port 5432 failed", "text/plain")  # fmt: skip
RATE_429 = as_json(429, {"error": {"message": "Rate limit reached for org-7Hs3kLq9 in "
                                   "project proj_Zx81 on tokens per min"}})  # fmt: skip
CALLER_400 = as_json(400, {"error": {
    "message": "Invalid 'temperature': decimal above maximum value (router "
               "http://inference.corp:8080/v1 with key gw-abcdefgh12345678, Bearer "
               "abcdefgh123456789, host 10.0.0.7:9000).",
    "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}})  # fmt: skip
LEAKS = ["sk-proj-", "AbCdEf0123456789", "platform.openai.com", "Traceback", "db-primary",
         "10.1.2.3", "org-7Hs3kLq9", "inference.corp", "8080", "gw-abcdefgh", "abcdefgh123456789",
         "10.0.0.7", "127.0.0.1"]  # fmt: skip
SECRETS = [leak for leak in LEAKS if leak not in ("Traceback", "org-7Hs3kLq9")]  # ledger may


def test_provider_error_text_never_reaches_clients_raw(gateway, upstream, good):
    secret = setup_models(upstream, good)
    for nonsense, reason in [
        (LEAKY_401, "upstream authentication failed"),
        (TRACEBACK_500, "upstream error 500"),
        (RATE_429, "upstream rate limited"),
    ]:
        for streamed in (False, True):
            upstream.script(nonsense)
            if streamed:
                answer = httpx.post(
                    f"{gateway.base_url}/chat/completions",
                    json={"model": "alone-openai", "messages": HELLO, "stream": True},
                    headers={"Authorization": f"Bearer {secret}"},
                    timeout=30,
                )
            else:
                answer = post(gateway, secret, model="alone-openai")
            error = assert_envelope(answer, 502)
            assert reason in error["message"]
            assert not [leak for leak in LEAKS if leak in answer.text], answer.text
            row = record(answer.headers["X-Request-ID"])
            assert row.attempt_log[0]["error"] == reason
            assert "detail" in row.attempt_log[0]  # the provider's account, for operators
            assert not [s for s in SECRETS if s in str(row.attempt_log)], row.attempt_log
    # The caller's own fault keeps its message, scrubbed of keys and internal addresses.
    upstream.script(CALLER_400)
    answer = post(gateway, secret, model="alone-openai")
    error = assert_envelope(answer, 400)
    assert error["message"].startswith("Invalid 'temperature': decimal above maximum value")
    assert error["param"] == "temperature"
    assert not [leak for leak in LEAKS if leak in answer.text], answer.text
    row = record(answer.headers["X-Request-ID"])
    assert not [s for s in SECRETS if s in str(row.attempt_log)], row.attempt_log
    # An error event inside a stream, after its first byte, is reported generically too.
    upstream.script(sse(chunk("Hi"), {"error": {"message": "worker 10.1.2.3 died: Traceback"}}))
    answer, text = stream(gateway, secret, "alone-openai")
    assert "stream_interrupted" in text and "upstream error" in text
    assert not [leak for leak in LEAKS if leak in text], text
    assert_nothing_held(gateway, secret)


# Low 7, the upstream side: bodies are capped (provider options, with defaults).


def test_oversized_upstream_bodies_are_refused(gateway, upstream, good):
    secret = setup_models(upstream, good, max_response_bytes=4096, max_stream_bytes=4096)
    big = as_json(200, completion("x" * 10_000))
    upstream.script(big)
    answer = post(gateway, secret, model="bad-openai")
    assert answer.status_code == 200 and answer.headers["X-Gateway-Model"] == "good"
    upstream.script(big)
    answer = post(gateway, secret, model="alone-openai")
    assert "upstream answer too large" in assert_envelope(answer, 502)["message"]
    row = record(answer.headers["X-Request-ID"])
    assert "larger than 4096 bytes" in row.attempt_log[0]["detail"]
    # A stream over its cap before its first chunk falls back; after it, ends in an error.
    upstream.script(sse(chunk("y" * 10_000)))
    answer, text = stream(gateway, secret, "bad-openai")
    assert answer.headers["X-Gateway-Model"] == "good" and text.endswith("[DONE]\n\n")
    opening = sse(chunk(""))
    rest = sse(*[chunk("z" * 500) for _ in range(20)], chunk(finish="stop"), b"data: [DONE]\n\n")
    upstream.script([opening, rest[rest.index(b"\r\n\r\n") + 4 :]])
    answer, text = stream(gateway, secret, "alone-openai")
    assert "stream_interrupted" in text and "upstream answer too large" in text
    assert "[DONE]" not in text
    assert text.count("zzzz") < 10  # relayed up to the cap, not beyond
    row = record(answer.headers["X-Request-ID"])
    assert (row.status, row.error_type) == ("stream_error", "bad_response")
    assert_nothing_held(gateway, secret)


def test_an_upstream_body_over_the_default_cap_is_refused(gateway, upstream, good):
    secret = setup_models(upstream, good)  # no options: 16 MiB by default
    upstream.script(as_json(200, completion("x" * (17 * 1024 * 1024))))
    answer = post(gateway, secret, model="alone-openai")
    assert "upstream answer too large" in assert_envelope(answer, 502)["message"]
    row = record(answer.headers["X-Request-ID"])
    assert "larger than 16777216 bytes" in row.attempt_log[0]["detail"]


def test_whatever_is_raised_in_the_pipeline_releases_the_hold_and_is_recorded(
    gateway_server, upstream, good, monkeypatch
):
    """The guard behind the findings above, for failures nobody foresaw: an exception after
    the budget hold was taken (here: pricing itself fails) still answers in OpenAI's envelope
    with X-Request-ID, releases the hold and writes a record, plain and streamed. (The gateway
    runs in this process, on uvicorn over TCP, so that the failure can be planted.)"""
    monkeypatch.setenv("TEST_OPENAI_API_KEY", "sk-test")
    secret = setup_models(upstream, good)

    def broken(*args, **kwargs):
        raise RuntimeError("pricing exploded")

    monkeypatch.setattr(chat, "cost_of", broken)
    answer = post(gateway_server, secret, model="good")
    assert assert_envelope(answer, 500)["code"] == "internal_error"
    assert "exploded" not in answer.text
    row = record(answer.headers["X-Request-ID"])
    assert (row.status, row.http_status, row.error_type) == ("error", 500, "internal_error")
    assert_nothing_held(gateway_server, secret)

    monkeypatch.setattr(streaming, "cost_of", broken)
    answer, text = stream(gateway_server, secret, "good")
    assert "Hello there, streamed." in text
    assert "stream_interrupted" in text and "[DONE]" not in text
    row = record(answer.headers["X-Request-ID"])
    assert (row.status, row.error_type) == ("error", "internal_error")
    assert_nothing_held(gateway_server, secret)
