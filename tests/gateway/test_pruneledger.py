"""Ledger retention: `manage.py pruneledger --before DATE` deletes old ledger rows in batches
and keeps the roll-ups the reports read, rolling a day up first when they do not cover it."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import uuid
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Sum
from django.utils import timezone

from gateway import tasks
from gateway.models import UsageRecord
from reports import rollups
from reports.models import DailyRollup, HourlyRollup
from tests.factories import make_team

pytestmark = pytest.mark.django_db

# Days well before the current month, whatever today is.
FIRST_OF_MONTH = (
    timezone.now().astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
)
OLD = FIRST_OF_MONTH - dt.timedelta(days=60)  # midnight UTC
DAY1, DAY2, DAY3 = (OLD + dt.timedelta(days=i) for i in range(3))


def rows(team, day: dt.datetime, n: int, cost: str = "0.01") -> None:
    UsageRecord.objects.bulk_create(
        UsageRecord(request_id=uuid.uuid4().hex, created_at=day + dt.timedelta(minutes=7 * i),
                    team=team, served_model="m", provider="p", cost_usd=Decimal(cost))
        for i in range(n)
    )  # fmt: skip


def daily(day: dt.datetime) -> tuple[int, int]:
    sums = DailyRollup.objects.filter(day=day).aggregate(r=Sum("requests"), c=Sum("cost_units"))
    return sums["r"] or 0, sums["c"] or 0


def prune(*args: str) -> str:
    out = StringIO()
    call_command("pruneledger", *args, stdout=out)
    return out.getvalue()


def test_it_deletes_old_days_in_batches_and_keeps_their_rollups():
    team = make_team()
    rows(team, DAY1, 7)
    rows(team, DAY2, 5)
    rows(team, DAY3, 4)
    rollups.rebuild(DAY1, DAY1 + dt.timedelta(days=1))  # day 1 is rolled up, day 2 is not
    assert daily(DAY1)[0] == 7 and daily(DAY2) == (0, 0)

    out = prune("--before", DAY3.date().isoformat(), "--batch-size", "3")

    assert UsageRecord.objects.filter(created_at__lt=DAY3).count() == 0
    assert UsageRecord.objects.filter(created_at__gte=DAY3).count() == 4  # kept
    cent = 100_000_000  # $0.01 in units of 1e-10 USD
    assert daily(DAY1) == (7, 7 * cent)
    assert daily(DAY2) == (5, 5 * cent)  # rolled up before its rows went
    assert (
        HourlyRollup.objects.filter(hour__gte=DAY2, hour__lt=DAY3).aggregate(n=Sum("requests"))["n"]
        == 5
    )
    assert f"{DAY2.date()}: rolled up 5 rows (the roll-ups had 0)" in out
    assert "Deleted 12 ledger rows" in out


def test_a_dry_run_deletes_nothing():
    team = make_team()
    rows(team, DAY1, 3)
    out = prune("--before", DAY2.date().isoformat(), "--dry-run")
    assert f"{DAY1.date()}: would delete 3 rows (rolled up first)" in out
    assert UsageRecord.objects.count() == 3
    assert not DailyRollup.objects.exists()


def test_a_day_already_partly_pruned_keeps_its_fuller_rollups():
    """An interrupted run deleted part of a day: its roll-ups (7) are not recomputed from the
    3 rows left."""
    team = make_team()
    rows(team, DAY1, 7)
    rollups.rebuild(DAY1, DAY1 + dt.timedelta(days=1))
    UsageRecord.objects.filter(
        pk__in=list(UsageRecord.objects.values_list("pk", flat=True)[:4])
    ).delete()
    prune("--before", DAY2.date().isoformat())
    assert UsageRecord.objects.count() == 0
    assert daily(DAY1)[0] == 7


@pytest.mark.parametrize("bad", ["2026-13-01", "yesterday", "01/02/2026", ""])
def test_a_bad_date_is_a_clear_error(bad):
    with pytest.raises(CommandError, match="is not a date: give it as YYYY-MM-DD"):
        prune("--before", bad)


def test_the_current_month_is_refused():
    team = make_team()
    rows(team, FIRST_OF_MONTH, 2)
    with pytest.raises(CommandError, match="would prune rows of the current month"):
        prune("--before", (FIRST_OF_MONTH + dt.timedelta(days=1)).date().isoformat())
    assert UsageRecord.objects.count() == 2


def test_nothing_to_prune_says_so():
    assert "nothing to prune" in prune("--before", DAY1.date().isoformat())


def archived(day: dt.datetime, suffix: str = "") -> list[dict[str, str]]:
    path = Path(settings.GATEWAY_LEDGER_ARCHIVE_DIR) / f"ledger-{day.date()}{suffix}.csv.gz"
    with gzip.open(path, "rt", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_rows_are_archived_with_every_column_before_they_go():
    team = make_team()
    rows(team, DAY1, 3, cost="0.0000000007")
    UsageRecord.objects.filter(pk=UsageRecord.objects.first().pk).update(
        attempt_log=[{"provider": "p", "error": 'line one\nline two, "quoted"'}],
        stream=True,
    )
    kept = {r.request_id: r for r in UsageRecord.objects.all()}

    prune("--before", DAY2.date().isoformat())

    got = archived(DAY1)
    assert list(got[0]) == [f.column for f in UsageRecord._meta.concrete_fields]
    assert {r["request_id"] for r in got} == set(kept)
    for row in got:
        record = kept[row["request_id"]]
        assert Decimal(row["cost_usd"]) == record.cost_usd == Decimal("0.0000000007")
        assert dt.datetime.fromisoformat(row["created_at"]) == record.created_at
        assert json.loads(row["attempt_log"]) == record.attempt_log
        assert row["stream"] == ("t" if record.stream else "f")
    # A second run over the same day (rows replayed into it) never overwrites the first file.
    rows(team, DAY1, 1)
    prune("--before", DAY2.date().isoformat())
    assert len(archived(DAY1)) == 3 and len(archived(DAY1, ".2")) == 1


def test_an_archive_folder_it_cannot_write_stops_it_before_anything_goes(settings, tmp_path):
    team = make_team()
    rows(team, DAY1, 2)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings.GATEWAY_LEDGER_ARCHIVE_DIR = str(blocker / "ledger")
    with pytest.raises(CommandError, match="cannot write the archive to .*nothing was pruned"):
        prune("--before", DAY2.date().isoformat())
    assert UsageRecord.objects.count() == 2


def test_no_archive_deletes_without_writing_a_file():
    team = make_team()
    rows(team, DAY1, 2)
    out = prune("--before", DAY2.date().isoformat(), "--no-archive")
    assert "Deleted 2 ledger rows" in out and "archived" not in out
    assert not Path(settings.GATEWAY_LEDGER_ARCHIVE_DIR).exists()


def test_beat_with_a_retention_archives_and_drops_the_older_days(settings):
    settings.GATEWAY = {**settings.GATEWAY, "LEDGER_RETENTION_DAYS": 30}
    team = make_team()
    rows(team, DAY1, 3)
    rows(team, timezone.now(), 2)

    said = tasks.maintain_ledger()

    assert "Deleted 3 ledger rows" in said
    assert UsageRecord.objects.count() == 2
    assert not UsageRecord.objects.filter(created_at__lt=DAY2).exists()
    assert (Path(settings.GATEWAY_LEDGER_ARCHIVE_DIR) / f"ledger-{DAY1.date()}.csv.gz").exists()


def test_beat_without_a_retention_keeps_every_row():
    team = make_team()
    rows(team, DAY1, 3)
    assert tasks.maintain_ledger() == "partitions created: 0"
    assert UsageRecord.objects.count() == 3
