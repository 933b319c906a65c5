"""Adds sums to rollup rows: `INSERT … ON CONFLICT (key) DO UPDATE SET n = n + excluded.n`.

One statement adds to a row atomically, so concurrent writers never lose an increment. Rows
go in key order, so two transactions lock the rows they share in the same order and cannot
deadlock. PostgreSQL gets every row of a batch in one statement (`unnest` of one array per
column: a few parameters, one round trip); SQLite, which serialises writers anyway, gets
one statement per row through executemany.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from django.db import connection

from reports.models import COUNTER_FIELDS, DIMENSION_FIELDS, Rollup

# period start, team, feature key, model, provider, endpoint
Key = tuple[dt.datetime, int, int, str, str, str]
BATCH = 5000
_TYPES: tuple[str, ...] = ("timestamptz", "bigint", "bigint", "text", "text", "text")
_TYPES += ("bigint",) * len(COUNTER_FIELDS)


def upsert(model: type[Rollup], sums: dict[Key, list[int]]) -> None:
    """Add `sums` (counters in COUNTER_FIELDS order, by key) to `model`'s rows."""
    if not sums:
        return
    table = model._meta.db_table
    keys = [model.PERIOD_FIELD, *DIMENSION_FIELDS]
    columns = ", ".join([*keys, *COUNTER_FIELDS])
    conflict = f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET " + ", ".join(
        f"{c} = {table}.{c} + excluded.{c}" for c in COUNTER_FIELDS
    )
    adapt = connection.ops.adapt_datetimefield_value
    rows = [(adapt(start), *rest, *counters) for (start, *rest), counters in sorted(sums.items())]
    with connection.cursor() as cursor:
        for batch in _chunks(rows, BATCH):
            if connection.vendor == "postgresql":
                arrays = ", ".join(f"%s::{t}[]" for t in _TYPES)
                sql = f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) {conflict}"
                cursor.execute(sql, [list(column) for column in zip(*batch, strict=True)])
            else:
                values = ", ".join(["%s"] * len(_TYPES))
                cursor.executemany(
                    f"INSERT INTO {table} ({columns}) VALUES ({values}) {conflict}", batch
                )


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
