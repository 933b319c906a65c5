"""The gateway's own CPU per request, without an HTTP server or a load generator in the way.

    .venv/bin/python bench/probe.py --scenario inproc                    # this checkout
    .venv/bin/python bench/probe.py --scenario inproc --compare ../base  # A/B, interleaved

Run by probe.py in a child process with the bench's environment (PostgreSQL, Redis db 14,
the fast mock): it calls production's ASGI app (`gatewaysite.asgi.http_application`, the
API's own handler) directly with cache-miss requests, `--concurrency` at a time on uvloop, and
prints the process's CPU time per request (`time.process_time`), the upstream call and both
Redis round trips included, uvicorn's HTTP parsing and the Celery drainer not. On this
2-core machine wrk, the mock and the gateway compete for the cores and whole-suite figures
move by ±20 % from run to run; this one moves by a few percent, so it can tell small changes
to the gateway's own Python apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
MESSAGES = "/v1/messages"  # Anthropic's format (passed through to claude, else translated)
RESPONSES = "/v1/responses"  # OpenAI's Responses format, translated to chat


def _scope(key: str, body: bytes, path: str = CHAT) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {key}".encode()),
            (b"anthropic-version", b"2023-06-01"),  # what /v1/messages requires; others ignore it
            (b"x-gateway-feature", b"bench"),
            (b"x-gateway-cache-ttl", b"60"),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


def _body(path: str, prompt: str, model: str = "bench-fast") -> bytes:
    if path == EMBEDDINGS:  # one text, as a search index embeds a query; floats back
        request = {"model": "bench-embed", "input": prompt, "encoding_format": "float"}
    elif path == MESSAGES:  # the same question as the chat body, in each inbound format
        request = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 64,
        }
    elif path == RESPONSES:
        request = {"model": model, "input": prompt, "max_output_tokens": 64}
    else:
        request = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 64,
        }
    return json.dumps(request).encode()


async def _request(app, key: str, prompt: str, path: str = CHAT, model: str = "bench-fast") -> int:
    body = _body(path, prompt, model)
    answered = asyncio.Event()
    status = 0
    body_sent = False

    async def receive() -> dict:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body", False):
            answered.set()

    await app(_scope(key, body, path), receive, send)
    return status


async def _drive(
    app,
    key: str,
    *,
    requests: int,
    concurrency: int,
    tag: str,
    path: str = CHAT,
    model: str = "bench-fast",
) -> list[int]:
    counter = iter(range(requests))
    statuses: list[int] = []
    keys = key.split(",")  # one team's key, or a fleet's: request n uses key n % len

    async def worker() -> None:
        for n in counter:
            prompt = f"{tag} {n} {time.time_ns()}"
            statuses.append(await _request(app, keys[n % len(keys)], prompt, path, model))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def _redis_cpu() -> list[float]:
    """CPU seconds each Redis primary has used (INFO cpu): the one server, or every primary
    of a cluster, the one holding the shared keys (`{gw}`) first."""
    from gateway.runtime import sync_redis

    redis = sync_redis()
    nodes = [redis]
    used = []
    if hasattr(redis, "get_primaries"):  # the node of the shared keys ({gw}) first
        shared = redis.get_node_from_key("{gw}:x").name
        primaries = sorted(redis.get_primaries(), key=lambda node: node.name != shared)
        nodes = [redis.get_redis_connection(node) for node in primaries]
    for node in nodes:
        info = node.info("cpu")
        used.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
    return used


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True, help="a key, or several separated by commas")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--path", default=CHAT, choices=[CHAT, EMBEDDINGS, MESSAGES, RESPONSES])
    parser.add_argument(
        "--model", default="bench-fast", help="bench-claude: the Anthropic-kind one"
    )
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    import uvloop

    from gatewaysite import asgi
    from gatewaysite.asgi import http_application

    # What the server's lifespan startup does first (older checkouts tuned at import).
    getattr(asgi, "tune_gc", lambda: None)()

    async def run() -> dict:
        await _drive(
            http_application,
            args.key,
            requests=300,
            concurrency=16,
            tag="warm",
            path=args.path,
            model=args.model,
        )
        rounds = []
        for r in range(args.rounds):
            redis_cpu = _redis_cpu()
            cpu, wall = time.process_time(), time.perf_counter()
            statuses = await _drive(
                http_application,
                args.key,
                requests=args.requests,
                concurrency=args.concurrency,
                tag=f"round{r}",
                path=args.path,
                model=args.model,
            )
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            redis_cpu = [
                after - before for before, after in zip(redis_cpu, _redis_cpu(), strict=True)
            ]
            bad = [s for s in statuses if s != 200]
            if bad:
                raise SystemExit(f"{len(bad)} answers were not 200: {sorted(set(bad))}")
            rounds.append(
                {
                    "cpu_us_per_req": 1e6 * cpu / args.requests,
                    "req_s": args.requests / wall,
                    # Redis's own CPU per request: every node's, and the busiest node's
                    "redis_us_per_req": 1e6 * sum(redis_cpu) / args.requests,
                    "redis_busiest_us_per_req": 1e6 * max(redis_cpu) / args.requests,
                    "redis_nodes_us_per_req": [1e6 * n / args.requests for n in redis_cpu],
                }
            )
        median = {
            name: statistics.median(r[name] for r in rounds)
            for name in ("cpu_us_per_req", "redis_us_per_req", "redis_busiest_us_per_req")
        }
        nodes = [
            statistics.median(r["redis_nodes_us_per_req"][i] for r in rounds)
            for i in range(len(rounds[0]["redis_nodes_us_per_req"]))
        ]
        return {
            "root": str(Path.cwd()),
            **median,
            "redis_nodes_us_per_req": nodes,
            "rounds": rounds,
        }

    print(json.dumps(uvloop.run(run())))


if __name__ == "__main__":
    main()
