"""Budget reconciliation at scale: 5,000 teams, 10,000 budgets (20,000 windows) and a
month of ledger rows, read from the ledger and from the roll-ups, side by side.

    createdb -h 127.0.0.1 -U postgres gateway_reconcile_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gateway_reconcile_bench \\
    REDIS_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python bench/reconcile_bench.py [--teams 5000] [--records 1000000]

Each team has a team budget and a feature budget; a quarter of the teams are in India's
time zone (+05:30: their windows start inside an hour, so their edges are read from the
ledger). The ledger rows are spread over the month so far and rolled up once
(`rollups.rebuild`). Then `rebuild_counters` runs three times with each reader:
- `ledger`: `budgets.spend.from_ledger`, one grouped SUM over the raw rows per window;
- `rollups`: `reports.spend.from_rollups`, what the gateway registers.
Run from a checkout whose code has no `budgets.spend` (before issue 24's change), it times
that code's `rebuild_counters` instead (one ledger SUM per budget and window).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path.cwd()))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-not-secret")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from budgets.models import Budget  # noqa: E402
from budgets.reconcile import rebuild_counters  # noqa: E402
from gateway.models import Feature, Team  # noqa: E402
from gateway.runtime import sync_redis  # noqa: E402
from reports import rollups  # noqa: E402

INSERT = """
INSERT INTO gateway_usagerecord (request_id, created_at, team_id, feature_id, api_key_id,
    requested_model, served_model, provider, attempts, attempt_log, stream, input_tokens,
    output_tokens, cached_tokens, cache_write_tokens, cost_usd, saved_usd, estimated, unpriced,
    latency_ms, status, http_status, error_type, cache, content, reserved_usd, endpoint)
SELECT 'rb-' || g, %(start)s + random() * (%(end)s - %(start)s),
    %(team0)s + (g %% %(teams)s), CASE WHEN g %% 3 = 0 THEN NULL
                                       ELSE %(feature0)s + (g %% %(teams)s) END, NULL,
    'm', 'm', 'p', 1, '[]', false, 100, 50, 0, 0,
    round((random() * 0.01)::numeric, 10), 0, false, false, 100,
    CASE WHEN g %% 50 = 0 THEN 'refused' ELSE 'ok' END, 200, '', 'miss', NULL, 0,
    'chat.completions'
FROM generate_series(%(first)s, %(last)s) AS g
"""


def build(teams: int, records: int, now: dt.datetime) -> dt.datetime:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE gateway_usagerecord, reports_hourlyrollup, reports_dailyrollup, "
            "budgets_budget, gateway_feature, gateway_team CASCADE"
        )
    zones = ["UTC", "UTC", "UTC", "Asia/Kolkata"]
    made = Team.objects.bulk_create(
        [Team(name=f"rb-team-{i}", timezone=zones[i % 4]) for i in range(teams)]
    )
    features = Feature.objects.bulk_create([Feature(team=team, name="chatbot") for team in made])
    budgets = [Budget(team=t, monthly_limit_usd=1000, daily_limit_usd=100) for t in made]
    budgets += [
        Budget(team=f.team, feature=f, scope=Budget.Scope.FEATURE, monthly_limit_usd=100)
        for f in features
    ]
    Budget.objects.bulk_create(budgets)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(hours=6)
    team0, feature0 = made[0].pk, features[0].pk
    from gateway import partitions

    partitions.cover(start, now + dt.timedelta(days=1))
    with connection.cursor() as cursor:
        for first in range(1, records + 1, 250_000):
            last = min(records, first + 249_999)
            with transaction.atomic():
                cursor.execute(
                    INSERT,
                    {
                        "start": start,
                        "end": now - dt.timedelta(minutes=1),
                        "team0": team0,
                        "feature0": feature0,
                        "teams": teams,
                        "first": first,
                        "last": last,
                    },
                )
        cursor.execute("ANALYZE gateway_usagerecord")
    return start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teams", type=int, default=5000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="reuse the data of the last run")
    args = parser.parse_args()
    if not connection.settings_dict["NAME"].endswith("reconcile_bench"):
        sys.exit("The benchmark empties its tables: use a database named like *reconcile_bench.")
    call_command("migrate", verbosity=0)
    now = timezone.now()
    import budgets.reconcile

    print(f"code: {Path(budgets.reconcile.__file__).resolve().parent.parent}")
    if not args.keep:
        print(f"{args.teams:,} teams, {args.records:,} ledger rows…", flush=True)
        start = build(args.teams, args.records, now)
        took = time.perf_counter()
        rollups.rebuild(start, now)
        print(f"rolled up in {time.perf_counter() - took:.1f} s", flush=True)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE reports_hourlyrollup")
            cursor.execute("ANALYZE reports_dailyrollup")
    redis = sync_redis()
    if "spend" in vars(budgets.reconcile):
        from budgets import spend
        from reports.spend import from_rollups

        readers = {"ledger": spend.from_ledger, "rollups": from_rollups}
    else:
        spend, readers = None, {"one ledger SUM per window (before)": None}
    for name, reader in readers.items():
        if spend is not None:
            spend.register(reader)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            report = rebuild_counters(redis=redis, now=now, expected="bench")
            times.append(time.perf_counter() - started)
        shown = ", ".join(f"{t:.2f}" for t in times)
        print(f"{name}: {report['checked']:,} windows checked in {shown} s")


if __name__ == "__main__":
    main()
