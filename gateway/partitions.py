"""The ledger's table on PostgreSQL: partitioned by UTC day on `created_at` (issue 24).

- `convert()` (migration 0016) turns the plain table into a partitioned one without copying a
  row: the old table becomes the partition `gateway_usagerecord_legacy`, for every moment
  before the day after its newest row. Its primary key is rebuilt on `(id, created_at)`
  (PostgreSQL wants the partition key in every unique key); the other indexes are kept.
- `ensure()` (beat, hourly) creates the partitions of yesterday to `AHEAD_DAYS` days ahead.
  A row of a day without a partition waits in `gateway_usagerecord_default`; the day's
  partition, once created, takes its rows out of it. Nothing is ever refused for its date.
- `detach_day()` takes a whole day's partition out of the table, for pruneledger to archive
  and drop (`dropped()` finds one a crash left detached).

SQLite (the embedded default) keeps one plain table: `is_partitioned()` is False there and
nothing else here is called.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

from django.db import OperationalError, connection, transaction
from django.utils import timezone

log = logging.getLogger(__name__)

TABLE = "gateway_usagerecord"
LEGACY = f"{TABLE}_legacy"
DEFAULT = f"{TABLE}_default"
AHEAD_DAYS = 7
_LOCK = 0x6C656467  # pg_advisory_xact_lock: one process at a time changes the partitions
# How long attaching or detaching waits for the table's lock. A change waiting for it (behind
# a long report query) would queue every drain and read behind it: it gives up instead, and
# the next hourly run tries again (rows of a day without a partition wait in the default one).
LOCK_TIMEOUT = "5s"
_DAY_NAME = re.compile(rf"^{TABLE}_p(\d{{8}})$")
_BOUND = re.compile(r"FROM \((MINVALUE|'[^']+')\) TO \((MAXVALUE|'[^']+')\)")


@dataclass(frozen=True)
class Partition:
    name: str
    start: dt.datetime | None  # None: from the beginning of time (the legacy table)
    end: dt.datetime | None  # None: the default partition, which takes any day without one

    def covers(self, moment: dt.datetime) -> bool:
        return (
            self.end is not None
            and (self.start is None or self.start <= moment)
            and moment < self.end
        )


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


def day_start(moment: dt.datetime | dt.date) -> dt.datetime:
    if isinstance(moment, dt.datetime):
        moment = moment.astimezone(dt.UTC).date()
    return dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC)


def partitions() -> list[Partition]:
    """The table's partitions, the default one last."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
            [TABLE],
        )
        rows = cursor.fetchall()
    found = [_partition(name, bound) for name, bound in rows]
    earliest = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(found, key=lambda p: (p.end is None, p.start or earliest))


def _partition(name: str, bound: str) -> Partition:
    match = _BOUND.search(bound)
    if match is None:  # "DEFAULT"
        return Partition(name, None, None)
    start, end = (None if b.endswith("VALUE") else _moment(b) for b in match.groups())
    return Partition(name, start, end)


def _moment(literal: str) -> dt.datetime:
    return dt.datetime.fromisoformat(literal.strip("'")).astimezone(dt.UTC)


def ensure(now: dt.datetime | None = None) -> list[str]:
    """Create the missing day partitions from yesterday to AHEAD_DAYS ahead (UTC); returns
    their names. Rows of those days waiting in the default partition move into them."""
    today = day_start(now or timezone.now())
    return cover(today - dt.timedelta(days=1), today + dt.timedelta(days=AHEAD_DAYS + 1))


def cover(start: dt.datetime, end: dt.datetime) -> list[str]:
    """Create the missing day partitions of the UTC days from start's to the one before
    end's (loading a range of history, e.g. bench/scale.sh); returns their names."""
    if not is_partitioned():
        return []
    first, last = day_start(start), day_start(end)
    days = [first + dt.timedelta(days=n) for n in range((last - first).days)]
    created = []
    for day in days:
        try:
            if name := _ensure_day(day):
                created.append(name)
        except OperationalError as exc:  # the lock timeout: next time
            log.warning("the ledger partition of %s is not created yet: %s", day.date(), exc)
    return created


def _locked(cursor) -> None:
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")


def _ensure_day(day: dt.datetime) -> str | None:
    with transaction.atomic(), connection.cursor() as cursor:
        _locked(cursor)
        if any(p.covers(day) for p in partitions()):
            return None
        name = f"{TABLE}_p{day:%Y%m%d}"
        end = day + dt.timedelta(days=1)
        # Created apart and attached: ATTACH locks the table far less than CREATE ... PARTITION
        # OF, so drains keep writing; the day's rows the default partition holds come along.
        cursor.execute(
            f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        cursor.execute(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE created_at >= %s AND created_at < %s"
            f" RETURNING *) INSERT INTO {name} SELECT * FROM moved",
            [day, end],
        )
        cursor.execute(
            f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)",
            [day, end],
        )
        return name


def day_partition(day: dt.datetime) -> str | None:
    """The name of the partition holding exactly this UTC day, if there is one."""
    for p in partitions():
        if p.start == day and p.end == day + dt.timedelta(days=1):
            return p.name
    return None


def detach_day(day: dt.datetime) -> str | None:
    """Take the day's own partition out of the table (its rows leave the ledger, still in the
    detached table for the caller to archive and drop). None if the day has none, or if the
    table's lock was not had within LOCK_TIMEOUT (the caller deletes rows instead)."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            _locked(cursor)
            name = day_partition(day)
            if name is not None:
                cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
            return name
    except OperationalError as exc:
        log.warning("the ledger partition of %s stays attached: %s", day.date(), exc)
        return None


def dropped() -> list[tuple[str, dt.datetime]]:
    """Day tables detached but not yet dropped (a prune that stopped in between), with
    their day: what pruneledger archives and drops first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE %s"
            " AND NOT c.relispartition AND pg_table_is_visible(c.oid)",
            [f"{TABLE}_p%"],
        )
        names = [row[0] for row in cursor.fetchall()]
    found = []
    for name in names:
        match = _DAY_NAME.match(name)
        if match:
            found.append((name, day_start(dt.datetime.strptime(match[1], "%Y%m%d").date())))
    return sorted(found, key=lambda item: item[1])


def drop_table(name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {name}")


def convert(now: dt.datetime | None = None) -> None:
    """Partition the plain ledger table in place (PostgreSQL; migration 0016). One
    transaction: the table is locked for the primary key's rebuild and the old table's
    check against its range, both one pass over its rows (docs/operations.md gives the
    time measured)."""
    if connection.vendor != "postgresql" or is_partitioned():
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        # What the new table must have, by name: Django's later migrations find them so.
        cursor.execute(
            "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'f')",
            [TABLE],
        )
        constraints = cursor.fetchall()
        cursor.execute(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x"
            " JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %s::regclass",
            [TABLE],
        )
        indexes = cursor.fetchall()
        backing = {name for name, kind, _ in constraints if kind in "pu"}
        next_id = _drop_id_sequence(cursor)
        cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {LEGACY}")
        for n, (name, _) in enumerate(indexes):
            cursor.execute(f"ALTER INDEX {name} RENAME TO {LEGACY}_{n}")
        cursor.execute(
            f"CREATE TABLE {TABLE} (LIKE {LEGACY} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
            " INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE (created_at)"
        )
        cursor.execute(f"CREATE SEQUENCE {TABLE}_id_seq START WITH {next_id} OWNED BY {TABLE}.id")
        cursor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN id SET DEFAULT nextval('{TABLE}_id_seq')")
        cursor.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id, created_at)")
        for name, kind, definition in constraints:
            if kind != "p":
                cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {name} {definition}")
        for name, definition in indexes:
            if name not in backing:
                cursor.execute(definition)  # the same name, on the new (partitioned) table
        cursor.execute(f"SELECT max(created_at) FROM {LEGACY}")
        newest = cursor.fetchone()[0]
        if newest is None:
            cursor.execute(f"DROP TABLE {LEGACY}")
        else:
            legacy_pkey = f"{LEGACY}_{[name for name, _ in indexes].index(f'{TABLE}_pkey')}"
            cursor.execute(f"ALTER TABLE {LEGACY} DROP CONSTRAINT {legacy_pkey}")
            upper = day_start(newest) + dt.timedelta(days=1)
            cursor.execute(
                f"ALTER TABLE {TABLE} ATTACH PARTITION {LEGACY} FOR VALUES FROM (MINVALUE) TO (%s)",
                [upper],
            )
        cursor.execute(f"CREATE TABLE {DEFAULT} PARTITION OF {TABLE} DEFAULT")
    ensure(now)


def _drop_id_sequence(cursor) -> int:
    """Free the id column of its sequence (an identity, or a serial's from older Django) and
    return the next id it would have given: the new table's sequence starts there."""
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
    sequence = cursor.fetchone()[0]
    cursor.execute(f"SELECT last_value, is_called FROM {sequence}")
    last, called = cursor.fetchone()
    cursor.execute(f"SELECT coalesce(max(id), 0) FROM {TABLE}")
    next_id = max(last + 1 if called else last, cursor.fetchone()[0] + 1)
    cursor.execute(
        "SELECT attidentity FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'id'",
        [TABLE],
    )
    if cursor.fetchone()[0]:
        cursor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN id DROP IDENTITY")
    else:
        cursor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN id DROP DEFAULT")
        cursor.execute(f"DROP SEQUENCE {sequence}")
    return next_id
