"""Budget windows' totals from the roll-ups (registered as `budgets.spend`'s reader).

A window is cut into whole UTC days (daily roll-ups), whole hours (hourly roll-ups) and, for
a time zone whose midnight falls inside an hour (India's +05:30, Nepal's +05:45...), the
minutes at its edges, which the ledger answers. The roll-ups are written in the transaction
that writes the ledger rows, so the sums are the ledger's, to the unit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from django.db.models import Sum

from budgets.spend import Key, Totals, from_ledger
from reports.models import DailyRollup, HourlyRollup, Rollup
from reports.rollups import floor_day, floor_hour

HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)


def from_rollups(
    start: dt.datetime, end: dt.datetime, teams: Collection[int] | None = None
) -> dict[Key, Totals]:
    first_hour, last_hour = _ceil(floor_hour, start, HOUR), floor_hour(end)
    if first_hour >= last_hour:  # within one hour: the ledger's few rows
        return from_ledger(start, end, teams)
    out: dict[Key, Totals] = {}
    first_day, last_day = _ceil(floor_day, first_hour, DAY), floor_day(last_hour)
    if first_day < last_day:
        spans = [(DailyRollup, first_day, last_day)]
        spans += [(HourlyRollup, first_hour, first_day), (HourlyRollup, last_day, last_hour)]
    else:
        spans = [(HourlyRollup, first_hour, last_hour)]
    for model, span_start, span_end in spans:
        if span_start < span_end:
            _merge(out, _rolled(model, span_start, span_end, teams))
    for edge_start, edge_end in ((start, first_hour), (last_hour, end)):
        if edge_start < edge_end:
            _merge(out, from_ledger(edge_start, edge_end, teams))
    return out


def _ceil(floor, moment: dt.datetime, step: dt.timedelta) -> dt.datetime:
    floored = floor(moment)
    return floored if floored == moment else floored + step


def _rolled(
    model: type[Rollup], start: dt.datetime, end: dt.datetime, teams: Collection[int] | None
) -> dict[Key, Totals]:
    rows = model.objects.in_window(start, end)
    if teams is not None:
        rows = rows.filter(team_id__in=list(teams))
    grouped = (
        rows.order_by()
        .values("team_id", "feature_key")
        .annotate(
            cost=Sum("cost_units"),
            n=Sum("requests"),
            refused=Sum("refused"),
            errors=Sum("errors"),
            cut=Sum("stream_errors"),
            lost=Sum("lost"),
        )
    )
    out = {}
    for row in grouped:
        failed = row["errors"] + row["cut"] + row["lost"]
        served = row["n"] - row["refused"] - failed
        out[(row["team_id"], row["feature_key"])] = Totals(
            row["cost"], served, row["refused"], failed
        )
    return out


def _merge(into: dict[Key, Totals], more: dict[Key, Totals]) -> None:
    for key, sums in more.items():
        into.setdefault(key, Totals()).add(sums)
