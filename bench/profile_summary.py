"""Summarize a py-spy `--format raw` (collapsed stacks) profile of one gateway worker.

    .venv/bin/python bench/profile_summary.py bench/results/<stamp>/profile.txt

Prints the share of samples spent in (inclusive) the gateway's own functions and the
libraries around them, and the top self-time frames.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

# Inclusive buckets: a sample counts for every bucket whose pattern appears in its stack.
BUCKETS = {
    "uvicorn/httptools protocol (HTTP in and out)": r"uvicorn/protocols/http",
    "Django ASGI handler + middleware": r"django/core/handlers",
    "adrf/DRF APIView dispatch": r"(adrf|rest_framework)/",
    "gateway.views.post (whole request)": r"gateway/views\.py",
    "services.prepare (auth, validation, routing)": r"prepare \(gateway/services\.py",
    "admission.admit (rate limit, cache get, reserve)": r"admit \(gateway/admission\.py",
    "services.attempt_models (upstream call)": r"attempt_models \(gateway/services\.py",
    "upstream client (httpx's API, aiohttp, transport.py)": (
        r"(httpx|httpcore|aiohttp)/|gateway/fastpath/transport\.py"
    ),
    "services.finish (settle, cache put, ledger)": r"finish \(gateway/services\.py",
    "Redis (round trips' connection, redis-py)": (
        r"redis/|gateway/(fastpath/multiplex|roundtrip)\.py"
    ),
    "asgiref sync_to_async / thread hops": r"asgiref/",
    "ledger drain (Postgres writes)": r"drain \(gateway/ledger\.py",
    "orjson / json": r"(orjson|json/)",
    "asyncio event loop machinery": r"asyncio/",
}


def parse(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        stacks.append((stack.split(";"), int(count)))
    return stacks


def main() -> None:
    stacks = parse(sys.argv[1])
    total = sum(c for _, c in stacks) or 1
    idle = sum(c for s, c in stacks if "idle" in s[-1] or s[-1].startswith("select ("))
    print(f"samples: {total}  (event loop idle/polling: {100 * idle / total:.1f} %)")
    print("\ninclusive share of samples:")
    for name, pattern in BUCKETS.items():
        rx = re.compile(pattern)
        n = sum(c for s, c in stacks if any(rx.search(f) for f in s))
        print(f"  {100 * n / total:5.1f} %  {name}")
    self_time = Counter()
    for s, c in stacks:
        self_time[s[-1]] += c
    print("\ntop self-time frames:")
    for frame, n in self_time.most_common(25):
        print(f"  {100 * n / total:5.1f} %  {frame[:140]}")
    gw = Counter()
    for s, c in stacks:
        for f in {f for f in s if "(gateway/" in f or "(budgets/" in f or "(reports/" in f}:
            gw[f] += c
    print("\ngateway/budgets frames, inclusive:")
    for frame, n in gw.most_common(30):
        print(f"  {100 * n / total:5.1f} %  {frame[:140]}")


if __name__ == "__main__":
    main()
