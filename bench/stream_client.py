"""Streaming measurements with aiohttp: time to first token, chunk gaps, and many open streams.

    .venv/bin/python bench/stream_client.py ttft --url http://127.0.0.1:9103/v1 -n 100
    .venv/bin/python bench/stream_client.py hold --url http://127.0.0.1:9201/v1 --key K -c 1000

`ttft` sends streamed requests one at a time and prints the p50/p90 time from sending the
request to the first content chunk, and the median gap between content chunks (equal to the
mock's chunk interval when chunks are forwarded as they arrive, not buffered).
`hold` opens `-c` streams at once and counts the ones that ended with `[DONE]`.

aiohttp rather than httpx: at a thousand concurrent streams httpx's own CPU (its pool scan
grows with the number of connections) took the cores the gateway needed on this 2-core
machine; the load generator must not steal the gateway's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp


def _headers(key: str) -> dict[str, str]:
    headers = {"X-Gateway-Feature": "bench", "X-Gateway-Cache-TTL": "0"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _body(model: str, i: int) -> dict:
    return {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 64,
        "messages": [{"role": "user", "content": f"Stream number {i} {time.time()}"}],
    }


async def one_stream(client: aiohttp.ClientSession, url: str, key: str, model: str, i: int):
    """(seconds to the first content chunk, [arrival times of content chunks], saw [DONE])."""
    started = time.perf_counter()
    arrivals: list[float] = []
    done = False
    async with client.post(
        url + "/chat/completions", json=_body(model, i), headers=_headers(key)
    ) as response:
        response.raise_for_status()
        async for raw in response.content:  # one line at a time, as it arrives
            line = raw.decode().rstrip("\r\n")
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            if '"content"' in line:
                arrivals.append(time.perf_counter())
    first = arrivals[0] - started if arrivals else float("nan")
    return first, arrivals, done


def _session(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=60),
    )


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def ttft(url: str, key: str, model: str, n: int) -> dict:
    firsts, gaps, incomplete = [], [], 0
    async with _session(1) as client:
        for i in range(n + 3):
            first, arrivals, done = await one_stream(client, url, key, model, i)
            if i < 3:
                continue  # warm-up: connections, config snapshot
            incomplete += not done
            firsts.append(first * 1000)
            gaps += [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:], strict=False)]
    return {
        "n": n,
        "ttft_p50_ms": statistics.median(firsts),
        "ttft_p90_ms": _pct(firsts, 90),
        "chunk_gap_p50_ms": statistics.median(gaps) if gaps else None,
        "incomplete": incomplete,
    }


async def hold(url: str, key: str, model: str, concurrency: int) -> dict:
    async with _session(concurrency) as client:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(one_stream(client, url, key, model, i) for i in range(concurrency)),
            return_exceptions=True,
        )
        elapsed = time.perf_counter() - started
    ok = sum(1 for r in results if not isinstance(r, BaseException) and r[2])
    errors = [repr(r)[:200] for r in results if isinstance(r, BaseException)][:3]
    firsts = [r[0] * 1000 for r in results if not isinstance(r, BaseException)]
    return {
        "concurrency": concurrency,
        "completed": ok,
        "failed": concurrency - ok,
        "seconds": elapsed,
        "ttft_p50_ms": statistics.median(firsts) if firsts else None,
        "ttft_max_ms": max(firsts) if firsts else None,
        "sample_errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["ttft", "hold"])
    parser.add_argument("--url", required=True, help="base URL ending in /v1")
    parser.add_argument("--key", default="")
    parser.add_argument("--model", default="bench-stream")
    parser.add_argument("-n", type=int, default=100, help="ttft: sequential streams")
    parser.add_argument("-c", type=int, default=1000, help="hold: concurrent streams")
    args = parser.parse_args()
    if args.mode == "ttft":
        out = asyncio.run(ttft(args.url, args.key, args.model, args.n))
    else:
        out = asyncio.run(hold(args.url, args.key, args.model, args.c))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
