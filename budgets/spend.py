"""What teams spent and requested in a window, per feature: what reconciliation
(`budgets/reconcile.py`) and the daily digest (`budgets/digests.py`) read.

The ledger answers by default (`from_ledger`). The reports app keeps the same sums per UTC
hour and day in its roll-ups, in the transaction that writes the ledger rows; at `ready()`
it registers a reader that answers from them (`register`; budgets never import reports,
see docs/architecture.md), so that a month's window costs a few roll-up rows per team
instead of every ledger row of the month. Both give the same figures to the unit: money is
summed in integer units (1e-10 USD) either way.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, Q, Sum

from gateway.models import UsageRecord
from gateway.money import usd_to_units

# (team id, feature key): the feature's id, 0 for requests with no feature.
Key = tuple[int, int]


@dataclass(slots=True)
class Totals:
    cost_units: int = 0
    served: int = 0
    refused: int = 0  # budgets, rate limits
    failed: int = 0  # errors, streams cut after their first byte, requests lost in a crash

    def add(self, other: Totals) -> None:
        self.cost_units += other.cost_units
        self.served += other.served
        self.refused += other.refused
        self.failed += other.failed


Reader = Callable[[datetime, datetime, Collection[int] | None], dict[Key, Totals]]


def from_ledger(
    start: datetime, end: datetime, teams: Collection[int] | None = None
) -> dict[Key, Totals]:
    """The ledger's totals of [start, end), per team and feature (`teams`: only these)."""
    status = UsageRecord.Status
    rows = UsageRecord.objects.between(start, end)
    if teams is not None:
        rows = rows.filter(team_id__in=list(teams))
    grouped = (
        rows.order_by()
        .values("team_id", "feature_id")
        .annotate(
            cost=Sum("cost_usd"),
            served=Count("id", filter=Q(status=status.OK)),
            refused=Count("id", filter=Q(status=status.REFUSED)),
            failed=Count("id", filter=~Q(status__in=[status.OK, status.REFUSED])),
        )
    )
    return {
        (row["team_id"], row["feature_id"] or 0): Totals(
            usd_to_units(row["cost"] or Decimal(0)), row["served"], row["refused"], row["failed"]
        )
        for row in grouped
    }


_reader: Reader = from_ledger


def register(reader: Reader) -> None:
    """Answer `totals` with `reader` (the reports app's roll-ups)."""
    global _reader
    _reader = reader


def totals(
    start: datetime, end: datetime, teams: Collection[int] | None = None
) -> dict[Key, Totals]:
    """What teams spent and requested in [start, end), per team and feature."""
    return _reader(start, end, teams)
