"""The monthly report and the overview at scale: 5,000 teams with 4 features each, 10,000
budgets (a daily and monthly one per team, a daily one on each team's first feature), 30
days of daily roll-ups (one row per day, team and feature) and today's hourly ones, on
PostgreSQL. Times `reports.monthly.report` (every team, as a reader who sees all: what the
exports and e-mails read), the monthly page of this month and the last, the overview and
every other page of /reports/ over 30 days, through Django's test client, and prints each
page's size.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/gateway_monthly_bench \\
        .venv/bin/python bench/monthly_bench.py [--teams 5000] [--runs 3]

The database is created and filled once (kept for reruns). Before/after: run it again from
an older checkout's directory with GATEWAY_CODE set to it, to time that checkout's reports
over the same data (Celery puts the working directory first on sys.path, so the directory
matters too):

    cd /tmp/before && GATEWAY_CODE=/tmp/before /path/to/.venv/bin/python \\
        /path/to/bench/monthly_bench.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("GATEWAY_CODE") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))
URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gateway_monthly_bench"
)
os.environ["DATABASE_URL"] = URL
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-not-secret")
os.environ.setdefault("ALLOWED_HOSTS", "testserver")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "1")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from budgets.models import Budget  # noqa: E402
from gateway.models import Feature, Team  # noqa: E402
from reports import monthly  # noqa: E402

DAYS = 30
FILL = """
INSERT INTO reports_dailyrollup (day, team_id, feature_key, served_model, provider, endpoint,
  requests, cache_hits, errors, refused, stream_errors, fallbacks, input_tokens,
  output_tokens, cached_tokens, cost_units, saved_units, billed_input_tokens,
  billed_output_tokens, billed_cached_tokens, billed_cache_write_tokens, hit_input_tokens,
  hit_output_tokens, hit_cached_tokens, fallback_extra_units, latency_count, latency_ms_sum,
  estimated, unpriced, lat_b0, lat_b1, lat_b2, lat_b3, lat_b4, lat_b5, lat_b6, lat_b7, lat_b8,
  lat_b9, lat_b10, lat_b11, lat_b12, lat_b13, lat_b14, lat_b15, lat_b16, lost)
SELECT %(start)s::timestamptz + d * interval '1 day', f.team_id, f.id, 'gpt-4o-mini', 'sim',
  'chat.completions', 20, 5, 0, 0, 0, 0, 20000, 6000, 0, 90000000 + f.id, 0, 15000, 4500, 0,
  0, 5000, 1500, 0, 0, 15, 4500, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
FROM gateway_feature f CROSS JOIN generate_series(0, %(days)s - 1) AS d
"""


HOURLY = FILL.replace("reports_dailyrollup (day,", "reports_hourlyrollup (hour,").replace(
    "interval '1 day'", "interval '1 hour'"
)


def ensure_database() -> None:
    name = URL.rsplit("/", 1)[1]
    found = subprocess.run(
        ["psql", URL.rsplit("/", 1)[0] + "/postgres", "-tAc",
         f"SELECT 1 FROM pg_database WHERE datname='{name}'"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not found:
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)


def fill(teams: int, today) -> None:
    call_command("migrate", verbosity=0)
    if Team.objects.count() >= teams:
        return
    print(f"Creating {teams:,} teams, {teams * 4:,} features, {teams * 2:,} budgets and "
          f"{DAYS} days of roll-ups…")  # fmt: skip
    Team.objects.bulk_create([Team(name=f"team-{i:05d}") for i in range(teams)], batch_size=2000)
    ids = list(Team.objects.values_list("id", flat=True))
    Feature.objects.bulk_create(
        [Feature(team_id=t, name=f"feature-{j}") for t in ids for j in range(4)], batch_size=5000
    )
    first = {t: f for f, t in reversed(Feature.objects.values_list("id", "team_id"))}
    Budget.objects.bulk_create(
        [Budget(team_id=t, daily_limit_usd=1 + t % 7, monthly_limit_usd=40) for t in ids]
        + [Budget(team_id=t, scope="feature", feature_id=first[t], daily_limit_usd=2) for t in ids],
        batch_size=5000,
    )
    hours = int((timezone.now() - today).total_seconds() // 3600) + 1
    with connection.cursor() as cursor:
        cursor.execute(FILL, {"start": today - dt.timedelta(days=DAYS - 1), "days": DAYS})
        cursor.execute(HOURLY, {"start": today, "days": hours})
        cursor.execute("ANALYZE")
    if not User.objects.filter(username="bench").exists():
        User.objects.create_superuser("bench", password="bench-password-1")


def timed(fn, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teams", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ensure_database()
    period = monthly.month_of(timezone.now())
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    fill(args.teams, today)
    client = Client()
    client.force_login(User.objects.get(username="bench"))  # a bench, not a login test
    seconds, data = timed(lambda: monthly.report(period, None), args.runs)
    print(f"monthly.report, every team: {seconds * 1000:,.0f} ms median of {args.runs}; "
          f"{len(data['features']):,} rows")  # fmt: skip
    pages = [
        f"/reports/monthly/?month={period.key}",
        f"/reports/monthly/?month={period.previous().key}",
        "/reports/?range=this-month",
        "/reports/?range=30d",
        "/reports/api/overview?range=30d",
        "/reports/spend/?range=30d&by=team",
        "/reports/spend/?range=30d&by=feature",
        "/reports/spend/?range=30d&by=model",
        "/reports/cache/?range=30d",
        "/reports/providers/?range=30d",
        "/reports/models/?range=30d",
        "/reports/availability/?range=30d",
        "/reports/incidents/?range=30d",
        "/reports/whatif/",
    ]
    for path in pages:
        client.get(path)  # warm
        seconds, answer = timed(lambda p=path: client.get(p), args.runs)
        print(f"{path}: {seconds * 1000:,.0f} ms median, {len(answer.content):,} bytes, "
              f"status {answer.status_code}")  # fmt: skip


if __name__ == "__main__":
    main()
