"""The roll-up repair against a busy ledger: what the periodic job costs, and whether a
drain waits for it (issue 24: the job re-read the last two hours in Python every minute,
under an exclusive lock the drain also needed).

    createdb -h 127.0.0.1 -U postgres gateway_rollup_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gateway_rollup_bench \\
        .venv/bin/python bench/rollup_repair_bench.py [--records 1000000]

Run it from a checkout to measure that checkout's code (the command is the same for the
commit before: `git worktree add /tmp/before <commit>`, then run this file from there with
the same database). The ledger is generated as bench/reports_bench.py does it, over the last
two hours (1,000,000 rows in two hours is ~140 requests/s), and rolled up once. Then:
1. `roll_up_recent` with nothing drifted (what the beat runs every minute), three times;
2. `roll_up_recent` after one hour's cost was zeroed in the roll-ups (a drift to repair);
3. a 5-record drain started 1 s into a full repair of the two hours (`rollups.rebuild`):
   how long the drain took, and how long the repair took;
4. the process's peak memory (ru_maxrss) after the repair.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reports_bench  # noqa: E402  (sets Django up)
from django.db import connection, connections, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from gateway.models import Team, UsageRecord  # noqa: E402
from reports import rollups  # noqa: E402
from reports.models import DailyRollup, HourlyRollup  # noqa: E402
from reports.tasks import roll_up_recent  # noqa: E402

SPAN = "interval '2 hours'"


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def drain(team: Team, end: dt.datetime) -> None:
    batch = [
        UsageRecord(
            request_id=f"bench-drain-{time.time_ns()}-{i}",
            created_at=end - dt.timedelta(minutes=1),
            team=team,
            requested_model="gpt-4o-mini",
            served_model="gpt-4o-mini",
            provider="sim-openai",
            status="ok",
            cache="miss",
            input_tokens=10,
            output_tokens=10,
            cost_usd="0.0001",
        )
        for i in range(5)
    ]
    with transaction.atomic():
        UsageRecord.objects.bulk_create(batch)
        rollups.apply(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    if not connection.settings_dict["NAME"].endswith("rollup_bench"):
        sys.exit("The benchmark empties the ledger: use a database named like *rollup_bench.")
    reports_bench.call_command("migrate", verbosity=0)
    shapes = reports_bench.configure()
    end = timezone.now() - dt.timedelta(minutes=2)
    reports_bench.INSERT = reports_bench.INSERT.replace("interval '90 days'", SPAN)
    print(f"code: {Path(rollups.__file__).resolve().parent.parent}")
    print(f"Generating {args.records:,} ledger rows over the last two hours…", flush=True)
    reports_bench.generate(args.records, shapes, end)
    DailyRollup.objects.all().delete()
    took, _ = timed(lambda: rollups.rebuild(end - dt.timedelta(hours=3), end))
    print(f"initial roll-up: {took:.1f} s, {HourlyRollup.objects.count():,} hourly rows")
    for run in range(3):
        took, changed = timed(lambda: roll_up_recent.apply().get())
        print(f"roll_up_recent, nothing drifted (run {run + 1}): {took:.2f} s")
    hour = HourlyRollup.objects.order_by("-hour").values_list("hour", flat=True).first()
    HourlyRollup.objects.filter(hour=hour).update(cost_units=0)
    took, changed = timed(lambda: roll_up_recent.apply().get())
    print(f"roll_up_recent, one hour drifted: {took:.2f} s")
    team = Team.objects.order_by("pk").first()
    repair: dict[str, float] = {}

    def repairer() -> None:
        repair["s"] = timed(lambda: rollups.rebuild(end - dt.timedelta(hours=2), end))[0]
        connections.close_all()

    thread = threading.Thread(target=repairer)
    thread.start()
    time.sleep(1.0)
    waited, _ = timed(lambda: drain(team, end))
    thread.join()
    print(f"full repair of the two hours: {repair['s']:.1f} s")
    print(f"a 5-record drain started 1 s into it: {waited * 1000:.0f} ms")
    print(
        f"peak memory (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB"
    )
    ledger = UsageRecord.objects.count()
    rolled = sum(HourlyRollup.objects.values_list("requests", flat=True))
    print(f"ledger rows {ledger:,}, rolled-up requests {rolled:,}")


if __name__ == "__main__":
    main()
