"""`python manage.py pruneledger --before DATE [--batch-size N] [--dry-run]`: delete the
ledger's rows (UsageRecord) of the whole UTC days before DATE, keeping the hourly and daily
roll-ups the reports read.

Day by day, oldest first:
1. the day's roll-ups must cover its ledger rows: when the daily roll-ups count fewer
   requests than the ledger holds for that day, the day is rolled up again from the ledger
   first (`reports.rollups.rebuild`); when they count as many or more (a day already partly
   pruned by an interrupted run), they are kept as they are;
2. the day's rows are deleted in batches of `--batch-size` (default 5000), one short
   transaction each, so the table is never locked for long.

DATE must be at least one day before the first day of the current UTC month: the current
month's rows are what budget counters are rebuilt from (`reconcile_counters`), what the daily
digest reads (yesterday) and what the recent roll-up repair recomputes (the last two hours).
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Min, Sum
from django.utils import timezone

from gateway.models import UsageRecord
from reports import rollups
from reports.models import DailyRollup


def latest_allowed(now: dt.datetime) -> dt.date:
    """The latest --before accepted: the last day of the previous UTC month."""
    first_of_month = now.astimezone(dt.UTC).date().replace(day=1)
    return first_of_month - dt.timedelta(days=1)


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


class Command(BaseCommand):
    help = (
        "Delete ledger rows of the UTC days before --before (YYYY-MM-DD), keeping the roll-ups "
        "(each day is rolled up first when its roll-ups do not cover it)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--before", required=True, help="YYYY-MM-DD (UTC), not included")
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument("--dry-run", action="store_true", help="say what would be done")

    def handle(self, *args, before: str, batch_size: int, dry_run: bool, **options) -> None:
        try:
            cutoff = dt.date.fromisoformat(before)
        except ValueError:
            raise CommandError(
                f"--before {before!r} is not a date: give it as YYYY-MM-DD, e.g. 2026-01-01."
            ) from None
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        latest = latest_allowed(timezone.now())
        if cutoff > latest:
            raise CommandError(
                f"--before {cutoff} would prune rows of the current month, which budget counters"
                f" are rebuilt from: the latest date accepted today is {latest}."
            )
        oldest = UsageRecord.objects.aggregate(oldest=Min("created_at"))["oldest"]
        if oldest is None or oldest >= _day_start(cutoff):
            self.stdout.write(f"No ledger rows before {cutoff}: nothing to prune.")
            return
        day = rollups.floor_day(oldest).date()
        total = 0
        while day < cutoff:
            total += self.prune_day(day, batch_size=batch_size, dry_run=dry_run)
            day += dt.timedelta(days=1)
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(f"{verb} {total} ledger rows before {cutoff}; roll-ups kept.")

    def prune_day(self, day: dt.date, *, batch_size: int, dry_run: bool) -> int:
        start = _day_start(day)
        end = start + dt.timedelta(days=1)
        rows = UsageRecord.objects.between(start, end)
        in_ledger = rows.count()
        if not in_ledger:
            return 0
        rolled = DailyRollup.objects.filter(day=start).aggregate(n=Sum("requests"))["n"] or 0
        roll_up = rolled < in_ledger
        if dry_run:
            note = " (rolled up first)" if roll_up else ""
            self.stdout.write(f"{day}: would delete {in_ledger} rows{note}")
            return in_ledger
        if roll_up:
            rollups.rebuild(start, end)
            self.stdout.write(f"{day}: rolled up {in_ledger} rows (the roll-ups had {rolled})")
        deleted = 0
        while True:
            with transaction.atomic():
                ids = list(rows.order_by().values_list("pk", flat=True)[:batch_size])
                if not ids:
                    break
                deleted += UsageRecord.objects.filter(pk__in=ids).delete()[0]
        self.stdout.write(f"{day}: deleted {deleted} rows")
        return deleted
