"""The ledger partitioned by UTC day on PostgreSQL (gateway/partitions.py): the migration that
turns a plain table into one, the day partitions beat creates, and pruneledger archiving and
dropping whole days. Every date here is computed from today, so the tests hold on any date."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from gateway import ledger, partitions, runtime
from gateway.models import UsageRecord
from reports.models import DailyRollup
from tests.factories import make_team
from tests.gateway.test_ledger import entry
from tests.processes import ROOT, requires_postgres

pytestmark = [pytest.mark.django_db, requires_postgres]

TODAY = partitions.day_start(timezone.now())
FIRST_OF_MONTH = TODAY.replace(day=1)
OLD = FIRST_OF_MONTH - dt.timedelta(days=60)  # midnight UTC, well before this month
DAY1, DAY2, DAY3 = (OLD + dt.timedelta(days=i) for i in range(3))


def add_rows(team, day: dt.datetime, n: int, cost: str = "0.01") -> list[str]:
    ids = [uuid.uuid4().hex for _ in range(n)]
    UsageRecord.objects.bulk_create(
        UsageRecord(request_id=rid, created_at=day + dt.timedelta(minutes=7 * i), team=team,
                    served_model="m", provider="p", cost_usd=Decimal(cost))
        for i, rid in enumerate(ids)
    )  # fmt: skip
    return ids


def holder(request_id: str) -> str:
    """The partition a row is stored in."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM gateway_usagerecord WHERE request_id = %s",
            [request_id],
        )
        return cursor.fetchone()[0]


def archived(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def prune(*args: str) -> str:
    out = StringIO()
    call_command("pruneledger", *args, stdout=out)
    return out.getvalue()


def test_the_migrations_give_a_day_partitioned_table_and_a_week_ahead():
    assert partitions.is_partitioned()
    found = partitions.partitions()
    assert found[-1].name == partitions.DEFAULT and found[-1].end is None
    today = partitions.day_start(timezone.now())  # a UTC midnight may have passed since
    for n in range(partitions.AHEAD_DAYS):
        assert any(p.covers(today + dt.timedelta(days=n)) for p in found)
    team = make_team()
    [rid] = add_rows(team, TODAY + dt.timedelta(hours=1), 1)
    assert holder(rid) == f"gateway_usagerecord_p{TODAY:%Y%m%d}"
    assert UsageRecord.objects.get(request_id=rid).team == team


def test_a_day_without_a_partition_waits_in_the_default_one_and_moves_into_its_own():
    team = make_team()
    later = TODAY + dt.timedelta(days=40)
    waiting = add_rows(team, later, 5)
    assert {holder(r) for r in waiting} == {partitions.DEFAULT}

    created = partitions.ensure(now=later)

    assert f"gateway_usagerecord_p{later:%Y%m%d}" in created
    assert {holder(r) for r in waiting} == {f"gateway_usagerecord_p{later:%Y%m%d}"}
    assert UsageRecord.objects.filter(request_id__in=waiting).count() == 5
    assert partitions.ensure(now=later) == []  # a second run has nothing to do


def test_the_drain_looks_a_batch_up_in_its_own_day_partition_only():
    """The drain's check for records already written must not probe every partition (a
    year's worth with a long retention): EXPLAIN shows which ones its query reads."""
    team = make_team()
    for back in range(0, 40, partitions.AHEAD_DAYS):
        partitions.ensure(now=TODAY - dt.timedelta(days=back))
    assert len(partitions.partitions()) > 40
    moment = TODAY + dt.timedelta(hours=3)
    for i in range(3):
        record = entry(team, created_at=(moment + dt.timedelta(seconds=i)).isoformat())
        runtime.sync_redis().rpush(ledger.queue_key(0), ledger.encode(record))
    with CaptureQueriesContext(connection) as queries:
        assert ledger.drain() == 3
    [lookup] = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("SELECT") and '"request_id" IN' in q["sql"]
    ]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {lookup}")
        plan = cursor.fetchone()[0]
    assert relations(plan) == {f"gateway_usagerecord_p{TODAY:%Y%m%d}"}


def relations(plan) -> set[str]:
    if isinstance(plan, list):
        return set().union(*(relations(p) for p in plan))
    if isinstance(plan, dict):
        found = {plan["Relation Name"]} if "Relation Name" in plan else set()
        return found.union(*(relations(v) for v in plan.values()))
    return set()


def test_the_same_record_twice_is_refused_by_the_table_itself():
    team = make_team()
    [rid] = add_rows(team, TODAY, 1)
    with pytest.raises(IntegrityError, match=r"\(request_id, created_at\)"), transaction.atomic():
        UsageRecord.objects.create(request_id=rid, created_at=TODAY, team=team)


def test_pruneledger_archives_whole_day_partitions_then_drops_them():
    team = make_team()
    day1 = add_rows(team, DAY1, 7, cost="0.01")
    add_rows(team, DAY2, 5, cost="0.02")
    kept = add_rows(team, DAY3, 4)
    partitions.ensure(now=DAY2)  # the three days get partitions of their own
    assert holder(day1[0]) == f"gateway_usagerecord_p{DAY1:%Y%m%d}"

    out = prune("--before", DAY3.date().isoformat())

    names = {p.name for p in partitions.partitions()}
    assert f"gateway_usagerecord_p{DAY1:%Y%m%d}" not in names
    assert f"gateway_usagerecord_p{DAY3:%Y%m%d}" in names
    assert UsageRecord.objects.filter(created_at__lt=DAY3).count() == 0
    assert set(UsageRecord.objects.values_list("request_id", flat=True)) == set(kept)
    archive = Path(settings.GATEWAY_LEDGER_ARCHIVE_DIR)
    first = archived(archive / f"ledger-{DAY1.date()}.csv.gz")
    assert sorted(r["request_id"] for r in first) == sorted(day1)
    assert sum(Decimal(r["cost_usd"]) for r in first) == Decimal("0.07")
    assert len(archived(archive / f"ledger-{DAY2.date()}.csv.gz")) == 5
    # The roll-ups, made before the rows went, keep the days whole.
    assert DailyRollup.objects.filter(day=DAY1).aggregate(n=Sum("requests"))["n"] == 7
    assert f"{DAY2.date()}: dropped its partition of 5 rows" in out
    assert "Deleted 12 ledger rows" in out


def test_a_prune_stopped_after_detaching_a_day_finishes_it_on_the_next_run():
    team = make_team()
    ids = add_rows(team, DAY1, 3)
    partitions.ensure(now=DAY1)
    call_command("rebuildrollups", stdout=StringIO())
    name = partitions.detach_day(DAY1)  # ...and the process died before archiving it
    assert UsageRecord.objects.count() == 0
    assert partitions.dropped() == [(name, DAY1)]

    prune("--before", DAY1.date().isoformat())  # a cutoff that prunes nothing else

    assert partitions.dropped() == []
    rows = archived(Path(settings.GATEWAY_LEDGER_ARCHIVE_DIR) / f"ledger-{DAY1.date()}.csv.gz")
    assert sorted(r["request_id"] for r in rows) == sorted(ids)


def test_a_day_whose_table_is_busy_is_pruned_by_row_deletes_instead(monkeypatch):
    """A long report query holds the table: the detach gives up after its lock timeout
    rather than queue every drain behind it, and the day's rows go one batch at a time."""
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "200ms")
    team = make_team()
    ids = add_rows(team, DAY1, 4)
    partitions.ensure(now=DAY1)
    db = connection.settings_dict
    reader = psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
        password=db["PASSWORD"] or None, dbname=db["NAME"],
    )  # fmt: skip
    try:
        reader.execute("LOCK TABLE ONLY gateway_usagerecord IN ACCESS SHARE MODE")
        out = prune("--before", DAY2.date().isoformat())
    finally:
        reader.close()
    assert f"{DAY1.date()}: deleted 4 rows" in out
    assert UsageRecord.objects.count() == 0
    rows = archived(Path(settings.GATEWAY_LEDGER_ARCHIVE_DIR) / f"ledger-{DAY1.date()}.csv.gz")
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    assert partitions.day_partition(DAY1) is not None  # still there, empty: the next run drops it
    prune("--before", DAY2.date().isoformat())
    assert partitions.day_partition(DAY1) is None


# --- The migration, as an operator runs it: `manage.py migrate` on a database whose ledger
# --- is a plain table with rows (a release before 0016).

SEED = """
import datetime as dt
from decimal import Decimal
from gateway.models import Team, UsageRecord
team = Team.objects.create(name="legacy")
start = dt.datetime.fromisoformat("{start}")
UsageRecord.objects.bulk_create(
    UsageRecord(request_id=f"old-{{i}}", created_at=start + dt.timedelta(hours=5 * i),
                team=team, cost_usd=Decimal("0.0000000001") * i)
    for i in range(500)
)
UsageRecord.objects.filter(request_id="old-499").delete()  # the sequence is past the rows
"""

AFTER = """
import datetime as dt
from gateway.models import Team, UsageRecord
new = UsageRecord.objects.create(
    request_id="new", created_at=dt.datetime.now(dt.UTC), team=Team.objects.get()
)
print(new.id, UsageRecord.objects.count(), UsageRecord.objects.get(request_id="old-7").id)
"""


@pytest.fixture
def scratch_database():
    name = f"gw_partition_{uuid.uuid4().hex[:8]}"
    db = connection.settings_dict
    dsn = f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']}"
    if db["PASSWORD"]:
        dsn += f" password={db['PASSWORD']}"
    with psycopg.connect(dsn + " dbname=postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield dsn + f" dbname={name}", name
    finally:
        with psycopg.connect(dsn + " dbname=postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def manage(name: str, *args: str) -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    url = (
        f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"
    )
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "gatewaysite.settings"}
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_migrate_partitions_a_plain_ledger_in_place_keeping_every_row(scratch_database):
    dsn, name = scratch_database
    start = (TODAY - dt.timedelta(days=100)).isoformat()
    manage(name, "migrate", "gateway", "0015", "-v0")
    manage(name, "shell", "-c", SEED.format(start=start))
    with psycopg.connect(dsn) as db:
        before = db.execute(
            "SELECT count(*), sum(cost_usd), max(created_at) FROM gateway_usagerecord"
        ).fetchone()

    manage(name, "migrate", "-v0")

    with psycopg.connect(dsn) as db:
        kind = db.execute("SELECT relkind FROM pg_class WHERE relname = 'gateway_usagerecord'")
        assert kind.fetchone()[0] == "p"
        after = db.execute(
            "SELECT count(*), sum(cost_usd), max(created_at) FROM gateway_usagerecord"
        ).fetchone()
        assert after == before == (499, Decimal("0.0000124251"), before[2])
        bound = db.execute(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class"
            " WHERE relname = 'gateway_usagerecord_legacy'"
        ).fetchone()[0]
        upper = partitions.day_start(before[2]) + dt.timedelta(days=1)
        assert bound == f"FOR VALUES FROM (MINVALUE) TO ('{upper:%Y-%m-%d} 00:00:00+00')"
        # The indexes Django's later migrations look up by name are on the new table.
        indexes = {
            row[0]
            for row in db.execute(
                "SELECT indexrelid::regclass::text FROM pg_index"
                " WHERE indrelid = 'gateway_usagerecord'::regclass"
            )
        }
        assert "gateway_usagerecord_request_once" in indexes
        assert "gateway_usagerecord_pkey" in indexes
    said = manage(name, "shell", "-c", AFTER).strip().splitlines()[-1]
    new_id, count, old_id = (int(v) for v in said.split())
    assert new_id == 501 and count == 500 and old_id == 8  # ids go on where they were
    # The migrations and the models agree (nothing left for makemigrations to write).
    manage(name, "makemigrations", "--check", "--dry-run", "gateway")
