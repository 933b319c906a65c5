"""The partitioned ledger (issue 24, item 1) against the plain table, on this machine:

1. the migration that partitions an existing ledger of `--rows` rows (30 days of them):
   how long it holds the table;
2. drain throughput with roll-ups on, 4 queues and 2 drainers (`ledger_drain_bench.py`), the
   plain table and the partitioned one (with `--days` day partitions: a retention of over a
   year) interleaved round by round;
3. pruning one day of `--day-rows` rows with its archive: row deletes on the plain table,
   detach-and-drop on the partitioned one.

    .venv/bin/python bench/partition_bench.py [--rows 1000000] [--day-rows 200000] [--days 400]

It creates (and at the end drops) its own PostgreSQL databases, `*_drain_bench`, on
PGHOST/PGPORT/PGUSER (127.0.0.1:5432, postgres by default), and uses Redis database 14
(REDIS_URL to change it). The numbers it printed are in bench/HISTORY.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = os.environ.get("PGPORT", "5432")
USER = os.environ.get("PGUSER", "postgres")
PLAIN, PARTED, CONVERT = (f"partition_{n}_drain_bench" for n in ("plain", "parted", "convert"))

# Every NOT NULL column, as the drain writes them; `day` days before today, spread over it.
FILL = """
INSERT INTO gateway_usagerecord (request_id, created_at, team_id, requested_model,
  served_model, provider, attempts, attempt_log, endpoint, stream, input_tokens,
  output_tokens, cached_tokens, cache_write_tokens, cost_usd, saved_usd, reserved_usd,
  estimated, unpriced, latency_ms, status, http_status, error_type, cache)
SELECT md5(%(tag)s || n::text), date_trunc('day', now()) - make_interval(days => %(day)s)
  + make_interval(secs => (n %% %(spread)s) * 86400.0 / %(spread)s + (n / %(spread)s) * 86400.0),
  %(team)s, 'gpt-4o-mini', 'gpt-4o-mini', 'sim-openai', 1,
  '[{"provider": "sim-openai", "status": 200}]', 'chat.completions', false, 900, 300, 0, 0,
  0.0003150000, 0, 0, false, false, 420, 'ok', 200, '', 'miss'
FROM generate_series(0, %(rows)s - 1) AS n
"""


def dsn(name: str) -> str:
    return f"host={HOST} port={PORT} user={USER} dbname={name}"


def url(name: str) -> str:
    return f"postgres://{USER}@{HOST}:{PORT}/{name}"


def env(name: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url(name),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"),
        "SECRET_KEY": "benchmark-only-not-secret",
        "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
    }


def run(name: str, *args: str, archive: str = "") -> str:
    environ = env(name) | ({"GATEWAY_LEDGER_ARCHIVE_DIR": archive} if archive else {})
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def recreate(name: str) -> None:
    with psycopg.connect(dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")


def drop(name: str) -> None:
    with psycopg.connect(dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def plain_ledger(name: str) -> None:
    """Every table, the ledger as it was before gateway.0016."""
    run(name, "manage.py", "migrate", "gateway", "0015", "-v0")
    run(name, "manage.py", "migrate", "gateway", "0016", "--fake", "-v0")
    run(name, "manage.py", "migrate", "-v0")


def fill(name: str, rows: int, *, day: int, days: int = 1, tag: str = "r") -> None:
    made = run(name, "manage.py", "shell", "-c", TEAM_SCRIPT.format(name=f"bench-{tag}"))
    team = int(made.strip().splitlines()[-1])
    with psycopg.connect(dsn(name), autocommit=True) as db:
        spread = max(rows // days, 1)
        db.execute(FILL, {"tag": tag, "day": day, "spread": spread, "team": team, "rows": rows})
        db.execute("VACUUM ANALYZE gateway_usagerecord")


TEAM_SCRIPT = """
from gateway.models import Team
print(Team.objects.create(name="{name}").pk)
"""

DAYS_SCRIPT = """
import datetime as dt
from django.utils import timezone
from gateway import partitions
today = partitions.day_start(timezone.now())
for back in range(0, {days}, partitions.AHEAD_DAYS):
    partitions.ensure(now=today - dt.timedelta(days=back))
print(len(partitions.partitions()))
"""

CONVERT_SCRIPT = """
import time
from gateway import partitions
started = time.perf_counter()
partitions.convert()
print(f"converted in {time.perf_counter() - started:.2f} s")
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute(
        "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
        " WHERE inhparent = 'gateway_usagerecord'::regclass"
    )
    size = cursor.fetchone()[0]
    cursor.execute("SELECT count(*) FROM gateway_usagerecord")
    print(f"{size / cursor.fetchone()[0]:.0f} bytes per row with its indexes")
"""

PRUNE_SCRIPT = """
import datetime as dt, io, time
from django.core.management import call_command
from django.utils import timezone
from gateway import partitions
from reports import rollups
day = partitions.day_start(timezone.now()) - dt.timedelta(days={day})
partitions.ensure(now=day + dt.timedelta(days=1))  # the partitioned ledger: the day's own
rollups.rebuild(day, day + dt.timedelta(days=1))  # as the drain would have: not timed
out = io.StringIO()
started = time.perf_counter()
call_command("pruneledger", before=(day + dt.timedelta(days=1)).date().isoformat(), stdout=out)
took = time.perf_counter() - started
print(out.getvalue())
print(f"pruned in {{took:.2f}} s")
"""


def seconds(output: str) -> float:
    return float(re.findall(r"in ([\d.]+) s", output)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--day-rows", type=int, default=200_000)
    parser.add_argument("--drain-records", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--days", type=int, default=400, help="day partitions the partitioned ledger has"
    )
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    try:
        recreate(CONVERT)
        run(CONVERT, "manage.py", "migrate", "gateway", "0015", "-v0")
        fill(CONVERT, args.rows, day=29, days=30)
        said = run(CONVERT, "manage.py", "shell", "-c", CONVERT_SCRIPT)
        per_row = re.findall(r"(\d+) bytes per row", said)[-1]
        print(
            f"1. partitioning a ledger of {args.rows:,} rows: {seconds(said):.1f} s;"
            f" {per_row} bytes per row with its indexes",
            flush=True,
        )
        drop(CONVERT)

        recreate(PLAIN)
        plain_ledger(PLAIN)
        recreate(PARTED)
        run(PARTED, "manage.py", "migrate", "-v0")
        run(PARTED, "manage.py", "shell", "-c", DAYS_SCRIPT.format(days=args.days))
        drains: dict[str, list[float]] = {PLAIN: [], PARTED: []}
        prunes: dict[str, list[float]] = {PLAIN: [], PARTED: []}
        drain = ["bench/ledger_drain_bench.py", "--records", str(args.drain_records)]
        for round_ in range(args.rounds):  # every drain first: the prunes drop partitions
            for name in (PLAIN, PARTED):
                said = run(name, *drain, "--rounds", "1", "--shapes", "4x2")
                per_s = float(re.findall(r"([\d,]+) records/s", said)[-1].replace(",", ""))
                drains[name].append(per_s)
                label = "plain" if name == PLAIN else f"{args.days} day partitions"
                print(f"drain round {round_ + 1}, {label}: {per_s:,.0f} records/s", flush=True)
        # Untimed: the empty partitions of the days before the pruned ones go first.
        with tempfile.TemporaryDirectory() as archive:
            run(PARTED, "manage.py", "shell", "-c", PRUNE_SCRIPT.format(day=64), archive=archive)
        for round_ in range(args.rounds):
            for name in (PLAIN, PARTED):
                fill(name, args.day_rows, day=60 + round_, tag=f"p{round_}")
                with tempfile.TemporaryDirectory() as archive:
                    script = PRUNE_SCRIPT.format(day=60 + round_)
                    out = run(name, "manage.py", "shell", "-c", script, archive=archive)
                assert f"Deleted {args.day_rows} ledger rows" in out, out
                assert ("dropped its partition" in out) == (name == PARTED), out
                prunes[name].append(seconds(out))
                label = "plain" if name == PLAIN else "partitioned"
                print(
                    f"prune round {round_ + 1}, {label}: a day of {args.day_rows:,} rows"
                    f" {prunes[name][-1]:.2f} s",
                    flush=True,
                )
        print("\n| ledger | drain records/s (median; runs) | pruning a day (median; runs) |")
        print("|---|---|---|")
        for name, label in ((PLAIN, "plain table"), (PARTED, "partitioned by day")):
            d, p = drains[name], prunes[name]
            print(
                f"| {label} | {statistics.median(d):,.0f} ({', '.join(f'{x:,.0f}' for x in d)})"
                f" | {statistics.median(p):.2f} s ({', '.join(f'{x:.2f}' for x in p)}) |"
            )
    finally:
        for name in (PLAIN, PARTED, CONVERT):
            drop(name)


if __name__ == "__main__":
    main()
