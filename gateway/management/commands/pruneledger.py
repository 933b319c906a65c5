"""`python manage.py pruneledger --before DATE [--batch-size N] [--dry-run] [--no-archive]`:
archive, then delete, the ledger's rows (UsageRecord) of the whole UTC days before DATE,
keeping the hourly and daily roll-ups the reports read.

Day by day, oldest first:
1. the day's roll-ups must cover its ledger rows: when the daily roll-ups count fewer
   requests than the ledger holds for that day, the day is rolled up again from the ledger
   first (`reports.rollups.rebuild`); when they count as many or more (a day already partly
   pruned by an interrupted run), they are kept as they are;
2. the day's rows are written to `<archive dir>/ledger-YYYY-MM-DD.csv.gz` (every column, a
   header line; GATEWAY_LEDGER_ARCHIVE_DIR), unless --no-archive;
3. on a partitioned ledger (PostgreSQL, gateway/partitions.py) a day that has its own
   partition is detached, archived from the detached table and dropped: no row is deleted
   one by one. Otherwise the day's rows are deleted in batches of `--batch-size` (default
   5000), one short transaction each, so the table is never locked for long; rows that
   arrive for the day after its archive was written (a replayed dead letter) stay.

DATE must be at least one day before the first day of the current UTC month: the current
month's rows are what budget counters are rebuilt from (`reconcile_counters`), what the daily
digest reads (yesterday) and what the recent roll-up repair recomputes (the last two hours).
Beat runs it every hour when GATEWAY_LEDGER_RETENTION_DAYS is set (gateway.tasks).

An interrupted run can be run again. A day's file is never overwritten: a second file
(`ledger-YYYY-MM-DD.2.csv.gz`) holds what the rerun archived, which may repeat rows of the
first (the request id tells them apart).
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.db.models import Max, Min, Sum
from django.utils import timezone

from gateway import partitions
from gateway.models import UsageRecord
from reports import rollups
from reports.models import DailyRollup


def latest_allowed(now: dt.datetime) -> dt.date:
    """The latest --before accepted: the last day of the previous UTC month."""
    first_of_month = now.astimezone(dt.UTC).date().replace(day=1)
    return first_of_month - dt.timedelta(days=1)


COLUMNS = [str(f.column) for f in UsageRecord._meta.concrete_fields]


class Command(BaseCommand):
    help = (
        "Archive and delete ledger rows of the UTC days before --before (YYYY-MM-DD), keeping"
        " the roll-ups (each day is rolled up first when its roll-ups do not cover it)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--before", required=True, help="YYYY-MM-DD (UTC), not included")
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument("--dry-run", action="store_true", help="say what would be done")
        parser.add_argument(
            "--no-archive", action="store_true", help="delete without writing the rows out"
        )

    def handle(
        self, *args, before: str, batch_size: int, dry_run: bool, no_archive: bool, **options
    ) -> None:
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
        self.archive_dir = None if no_archive else Path(settings.GATEWAY_LEDGER_ARCHIVE_DIR)
        if self.archive_dir is not None and not dry_run:
            _writable(self.archive_dir)  # before any partition is detached or row deleted
        self.batch_size = batch_size
        partitioned = partitions.is_partitioned()
        total = 0
        if partitioned and not dry_run:
            for name, start in partitions.dropped():  # detached by a run that then stopped
                total += self.retire(name, start.date())
        days = self.days_before(cutoff, partitioned=partitioned)
        if not days and not total:
            self.stdout.write(f"No ledger rows before {cutoff}: nothing to prune.")
            return
        for day in days:
            total += self.prune_day(day, dry_run=dry_run, partitioned=partitioned)
        verb = "Would delete" if dry_run else "Deleted"
        where = f"; archived in {self.archive_dir}" if self.archive_dir and not dry_run else ""
        self.stdout.write(f"{verb} {total} ledger rows before {cutoff}; roll-ups kept{where}.")

    def days_before(self, cutoff: dt.date, *, partitioned: bool) -> list[dt.date]:
        """Every day from the oldest row's to the cutoff, and the days of partitions before it
        (an empty one is dropped)."""
        oldest = UsageRecord.objects.aggregate(oldest=Min("created_at"))["oldest"]
        days = set()
        if oldest is not None:
            day = rollups.floor_day(oldest).date()
            days = {day + dt.timedelta(days=n) for n in range((cutoff - day).days)}
        if partitioned:
            end = partitions.day_start(cutoff)
            days |= {
                p.start.date()
                for p in partitions.partitions()
                if p.start and p.end and p.end <= end and p.end - p.start == dt.timedelta(days=1)
            }
        return sorted(days)

    def prune_day(self, day: dt.date, *, dry_run: bool, partitioned: bool) -> int:
        start = partitions.day_start(day)
        end = start + dt.timedelta(days=1)
        rows = UsageRecord.objects.between(start, end)
        in_ledger = rows.count()
        if not in_ledger:
            if partitioned and not dry_run and (name := partitions.detach_day(start)):
                partitions.drop_table(name)  # an empty day partition: nothing to archive
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
        if partitioned and (name := partitions.detach_day(start)):
            return self.retire(name, day)
        last_id = rows.aggregate(last=Max("id"))["last"]
        rows = rows.filter(id__lte=last_id)  # what the archive holds: later arrivals stay
        self.archive(day, rows=rows)
        deleted = 0
        while True:
            with transaction.atomic():
                ids = list(rows.order_by().values_list("pk", flat=True)[: self.batch_size])
                if not ids:
                    break
                deleted += UsageRecord.objects.filter(pk__in=ids).delete()[0]
        self.stdout.write(f"{day}: deleted {deleted} rows")
        return deleted

    def retire(self, table: str, day: dt.date) -> int:
        """A detached day partition: archived, then dropped."""
        count = self.archive(day, table=table)
        partitions.drop_table(table)
        self.stdout.write(f"{day}: dropped its partition of {count} rows")
        return count

    def archive(self, day: dt.date, *, rows=None, table: str | None = None) -> int:
        """Write the day's rows (a queryset, or a detached table's) to a new gzip'd CSV
        file, synced to disk before anything is deleted; returns how many rows."""
        if self.archive_dir is None:
            if table is None:
                return rows.count()
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT count(*) FROM {table}")
                return cursor.fetchone()[0]
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        path = self.archive_dir / f"ledger-{day}.csv.gz"
        n = 1
        while path.exists():
            n += 1
            path = self.archive_dir / f"ledger-{day}.{n}.csv.gz"
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as raw:
            with gzip.open(raw, "wt", newline="", encoding="utf-8") as out:
                count = _write_csv(out, rows, table)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, path)
        self.stdout.write(f"{day}: archived {count} rows to {path}")
        return count


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".pruneledger-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CommandError(
            f"cannot write the archive to {folder} ({exc.strerror or exc}): nothing was pruned."
            " Set GATEWAY_LEDGER_ARCHIVE_DIR to a writable directory, or pass --no-archive."
        ) from None


def _write_csv(out: io.TextIOBase, rows, table: str | None) -> int:
    """PostgreSQL streams its own CSV (COPY); elsewhere the same columns and spellings."""
    if connection.vendor == "postgresql":
        columns = ", ".join(connection.ops.quote_name(c) for c in COLUMNS)
        if table is not None:
            query, params = f"SELECT {columns} FROM {table} ORDER BY id", None
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT count(*) FROM {table}")
                count = cursor.fetchone()[0]
        else:
            query, params = rows.order_by("id").values_list(*COLUMNS).query.sql_with_params()
            count = rows.count()
        copy_sql = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)"
        with connection.cursor() as cursor, connection.wrap_database_errors:
            with cursor.cursor.copy(copy_sql, params) as copy:
                for block in copy:
                    out.write(bytes(block).decode())
        return count
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for values in rows.order_by("id").values_list(*COLUMNS).iterator(chunk_size=2000):
        writer.writerow([_cell(v) for v in values])
        count += 1
    return count


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
