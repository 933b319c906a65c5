"""Ledger drain throughput with roll-ups on: one queue against sharded queues, one drainer
against several (issue 23: one list and one drain lock moved about 8,000 records/s).

    createdb -h 127.0.0.1 -U postgres gateway_drain_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gateway_drain_bench \\
    REDIS_URL=redis://127.0.0.1:6379/14 \\
        .venv/bin/python bench/ledger_drain_bench.py [--records 60000] [--rounds 3]

The database must be the benchmark's own (its name ends in "drain_bench"): its ledger and
roll-ups are emptied before each measurement, and the Redis database is flushed. Each
measurement queues `--records` records of 64 teams (as `ledger.queue_push` does, into the
shard of each record's team), starts the drainer processes, which set Django up and then
wait, and times from "go" until the queues are empty and every drainer has exited. Each
drainer calls `ledger.drain()` in a loop, as the web processes and the Celery worker do:
COPY into the ledger and the roll-up upserts, one transaction per batch of 500. The shapes
are interleaved round by round, so a noisy neighbour slows all of them alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-not-secret")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from gateway import ledger, runtime  # noqa: E402
from gateway.models import Team, UsageRecord  # noqa: E402
from reports.models import DailyRollup, HourlyRollup  # noqa: E402

TEAMS = 64
SHAPES = [(1, 1), (1, 2), (4, 2), (8, 4)]  # (shards, drainer processes)


def record(team_id: int, n: int) -> dict:
    return {
        "request_id": uuid.uuid4().hex,
        "created_at": datetime.now(UTC).isoformat(),
        "team_id": team_id,
        "feature_id": None,
        "api_key_id": None,
        "requested_model": "gpt-4o-mini",
        "served_model": "gpt-4o-mini" if n % 5 else "claude-3-5-haiku",
        "provider": "sim-openai" if n % 5 else "sim-anthropic",
        "attempts": 1,
        "attempt_log": [],
        "stream": bool(n % 2),
        "input_tokens": 120 + n % 50,
        "output_tokens": 40 + n % 30,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": "0.0000420000",
        "saved_usd": "0",
        "estimated": False,
        "unpriced": False,
        "latency_ms": 300 + n % 200,
        "status": "ok",
        "http_status": 200,
        "error_type": "",
        "cache": "miss" if n % 4 else "hit",
    }


def drainer() -> None:
    """One drainer process: wait for "go" on stdin, drain until nothing is queued."""
    sys.stdin.readline()
    written = 0
    while True:
        wrote = ledger.drain()
        written += wrote
        if not ledger.queued():
            break
        if not wrote:  # every shard with records is another drainer's: wait as a flusher does
            time.sleep(0.05)
    print(written, flush=True)


def measure(shards: int, drainers: int, records: int, teams: list[int]) -> dict:
    UsageRecord.objects.all().delete()
    HourlyRollup.objects.all().delete()
    DailyRollup.objects.all().delete()
    redis = runtime.sync_redis()
    redis.flushdb()
    pipe = redis.pipeline(transaction=False)
    for n in range(records):
        team = teams[n % len(teams)]
        pipe.rpush(ledger.queue_key(team % shards), ledger.encode(record(team, n)))
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--drainer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ,
        )
        for _ in range(drainers)
    ]
    time.sleep(3.0)  # every drainer has set Django up and waits on stdin
    started = time.perf_counter()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    written = sum(int(proc.communicate(timeout=600)[0].strip() or 0) for proc in procs)
    took = time.perf_counter() - started
    assert written == records == UsageRecord.objects.count(), (written, records)
    rolled = sum(HourlyRollup.objects.values_list("requests", flat=True))
    assert rolled == records, (rolled, records)
    return {"seconds": took, "per_s": records / took}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--shapes",
        default=",".join(f"{s}x{d}" for s, d in SHAPES),
        help="queues x drainers, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--drainer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drainer:
        drainer()
        return
    if not connection.settings_dict["NAME"].endswith("drain_bench"):
        sys.exit("The benchmark empties the ledger: use a database named like *drain_bench.")
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    teams = list(Team.objects.order_by("pk").values_list("pk", flat=True)[:TEAMS])
    for n in range(len(teams), TEAMS):
        teams.append(Team.objects.create(name=f"drain-bench-{n}").pk)
    print(f"code: {ROOT}  records per measurement: {args.records:,}  cores: {os.cpu_count()}")
    results: dict[tuple[int, ...], list[float]] = {shape: [] for shape in shapes}
    for round_ in range(args.rounds):
        for shards, drainers in shapes:
            res = measure(shards, drainers, args.records, teams)
            results[(shards, drainers)].append(res["per_s"])
            print(
                f"round {round_ + 1}: {shards} shard(s), {drainers} drainer(s): "
                f"{res['per_s']:,.0f} records/s ({res['seconds']:.1f} s)",
                flush=True,
            )
    base = statistics.median(results[shapes[0]])
    print("\n| shards | drainers | records/s (median) | runs | vs 1 shard, 1 drainer |")
    print("|---|---|---|---|---|")
    for (shards, drainers), runs in results.items():
        median = statistics.median(runs)
        spread = ", ".join(f"{r:,.0f}" for r in runs)
        print(f"| {shards} | {drainers} | {median:,.0f} | {spread} | {median / base:.2f}× |")


if __name__ == "__main__":
    main()
