"""Redis memory per budget window, and Redis CPU per script call, at a sustained request rate
(issue 23): before (settled tombstones kept in `holds`/`expiries` until the hold would have
expired) and after (a settle drops the hold and leaves a per-request marker with its own
short lifetime).

    PYTHONPATH=$PWD .venv/bin/python bench/budget_memory.py --redis redis://127.0.0.1:6379/8 \
        --rate 1000 --seconds 10 --compare ac5af41

Runs the reserve and spend scripts themselves (budgets/lua.py of the working tree, and of
the git revision given to --compare) against a real Redis, one team budget with a daily and
a monthly window, `--in-flight` requests open at a time, settled in order. It FLUSHES the db
it is pointed at: never point it at a shared one.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections import deque

import redis

DAY, MONTH = "gw:budget:1:2026-12-03", "gw:budget:1:2026-12"
WINDOWS = (DAY, MONTH)
RESERVATION_TTL_MS = 300_000
MARKER_TTL_MS = 60_000


def scripts(revision: str | None) -> dict:
    if revision is None:
        from budgets import lua

        return {"RESERVE": lua.RESERVE, "SPEND": lua.SPEND}
    source = subprocess.check_output(["git", "show", f"{revision}:budgets/lua.py"], text=True)
    namespace: dict = {}
    exec(compile(source, f"{revision}:budgets/lua.py", "exec"), namespace)  # noqa: S102
    return {"RESERVE": namespace["RESERVE"], "SPEND": namespace["SPEND"]}


def run(r: redis.Redis, src: dict, rate: float, seconds: float, in_flight: int) -> dict:
    r.flushdb()
    r.config_resetstat()
    reserve, spend = r.register_script(src["RESERVE"]), r.register_script(src["SPEND"])
    marker = "'SET', KEYS[1]" in src["SPEND"]  # the layout after issue 23
    hold_keys = [f"{w}:{k}" for w in WINDOWS for k in ("spent", "reserved", "holds", "expiries")]
    spend_keys = [
        f"{w}:{k}" for w in WINDOWS for k in ("spent", "reserved", "holds", "expiries", "alerted")
    ]
    per_window = [10**13, 86_400_000, 0]
    open_: deque[str] = deque()
    n = int(rate * seconds)
    start = time.monotonic()
    for i in range(n):
        rid = f"{i:032x}"
        reserve(keys=hold_keys, args=[rid, 1000, RESERVATION_TTL_MS, 10**15, 10**15])
        open_.append(rid)
        if len(open_) > in_flight:
            done = open_.popleft()
            if marker:
                spend(
                    keys=[f"{DAY}:settled:{done}", *spend_keys],
                    args=[done, 700, MARKER_TTL_MS, *per_window, *per_window],
                )
            else:
                spend(keys=spend_keys, args=[done, 700, *per_window, *per_window])
        late = start + (i + 1) / rate - time.monotonic()
        if late > 0:
            time.sleep(late)
    elapsed = time.monotonic() - start
    window_bytes = sum(
        r.memory_usage(f"{DAY}:{k}") or 0 for k in ("holds", "expiries", "spent", "reserved")
    )
    entries = r.hlen(f"{DAY}:holds") + r.zcard(f"{DAY}:expiries")
    markers = list(r.scan_iter(f"{DAY}:settled:*", count=1000))
    marker_bytes = sum(r.memory_usage(k) or 0 for k in markers[:200]) / max(
        1, min(200, len(markers))
    )
    stats = r.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    return {
        "requests": n,
        "achieved_rate": n / elapsed,
        "day_window_entries": entries,
        "day_window_bytes": window_bytes,
        "markers": len(markers),
        "marker_bytes_total": int(marker_bytes * len(markers)),
        "used_memory": r.info("memory")["used_memory"],
        "evalsha_usec_per_call": evalsha.get("usec_per_call"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--compare", help="a git revision whose budgets/lua.py runs first")
    args = parser.parse_args()
    r = redis.Redis.from_url(args.redis)
    runs = {}
    if args.compare:
        runs[f"before ({args.compare})"] = run(
            r, scripts(args.compare), args.rate, args.seconds, args.in_flight
        )
    runs["after (working tree)"] = run(r, scripts(None), args.rate, args.seconds, args.in_flight)
    r.flushdb()
    names = list(runs)
    print(f"{'':28}" + "".join(f"{n:>26}" for n in names))
    for field in next(iter(runs.values())):
        cells = []
        for n in names:
            v = runs[n][field]
            cells.append(f"{v:>26,.1f}" if isinstance(v, float) else f"{v!s:>26}")
        print(f"{field:28}" + "".join(cells))


if __name__ == "__main__":
    main()
