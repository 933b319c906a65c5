"""Rebuilding the live Redis counters from the ledger (the truth), and reporting drift.

The ledger's totals are read through `budgets.spend` (the roll-ups, once the reports app
registered them): one query per distinct window for every budget in it, not one sum over
the raw ledger per budget and window."""

from __future__ import annotations

import logging
from datetime import datetime

import redis as redis_sync
from django.utils import timezone

from budgets import lua, spend
from budgets.keys import SPENT_GRACE_S, budget_keys
from budgets.models import Budget
from budgets.windows import Window, current_windows

log = logging.getLogger(__name__)
PIPELINE = 1000  # windows raised per Redis round trip


def ledger_units(*, budget: Budget, window: Window) -> int:
    """What the ledger says this budget spent in this window."""
    return _units(budget, _Spent(spend.totals(window.start, window.end, [budget.team_id])))


class _Spent:
    """A window's spend in units, per team and feature and per team."""

    __slots__ = ("by_feature", "by_team")

    def __init__(self, totals: dict[spend.Key, spend.Totals]) -> None:
        self.by_feature = {key: sums.cost_units for key, sums in totals.items()}
        self.by_team: dict[int, int] = {}
        for (team, _), units in self.by_feature.items():
            self.by_team[team] = self.by_team.get(team, 0) + units


def _units(budget: Budget, spent: _Spent) -> int:
    if budget.scope == Budget.Scope.FEATURE:
        return spent.by_feature.get((budget.team_id, budget.feature_id or 0), 0)
    return spent.by_team.get(budget.team_id, 0)


def _compare(
    report: dict, budget: Budget, window: Window, ledger: int, counter: int, expected: str
) -> None:
    report["checked"] += 1
    if counter == ledger:
        return
    report["raised"] += counter < ledger
    report["drift"].append(
        {
            "budget_id": budget.pk,
            "window": window.name,
            "window_key": window.key,
            "redis_units": counter,
            "ledger_units": ledger,
            "drift_units": counter - ledger,
        }
    )
    if expected:
        level = logging.DEBUG
    else:
        level = logging.WARNING if counter < ledger else logging.INFO
    log.log(
        level,
        "budget %s %s %s: redis %s units, ledger %s units%s",
        budget.pk,
        window.name,
        window.key,
        counter,
        ledger,
        " (raised to the ledger)" if counter < ledger else "",
    )


def rebuild_counters(
    *, redis: redis_sync.Redis, now: datetime | None = None, expected: str = ""
) -> dict:
    """Raise every enabled budget's current counters to the ledger's totals; report drift.

    Counters are raised, never lowered: the ledger is written a few seconds after a request
    settles, so a counter above the ledger is usually spend not drained yet, and lowering it
    could let a request through that the budget should refuse. After a Redis flush the
    counters are 0 and this restores them. Returns {"checked", "raised", "drift": [...]}
    where drift lists every window whose counter differed from the ledger.

    A counter below the ledger is a WARNING (spend was lost) unless the caller knows why:
    `expected` names the reason (e.g. the embedded Redis stand-in starts empty), and then
    each window is logged at DEBUG and one INFO line sums up what was restored.
    """
    now = now or timezone.now()
    script = redis.register_script(lua.RAISE_TO_LEDGER)
    report: dict = {"checked": 0, "raised": 0, "drift": []}
    budgets = list(Budget.objects.filter(enabled=True).select_related("team").order_by("pk"))
    windows = {b.pk: current_windows(b.team.timezone, now) for b in budgets}
    teams: dict[tuple[datetime, datetime], set[int]] = {}
    for budget in budgets:
        for window in windows[budget.pk]:
            teams.setdefault((window.start, window.end), set()).add(budget.team_id)
    totals = {span: _Spent(spend.totals(*span, ids)) for span, ids in teams.items()}
    checks = [
        (budget, window, _units(budget, totals[(window.start, window.end)]))
        for budget in budgets
        for window in windows[budget.pk]
    ]
    for first in range(0, len(checks), PIPELINE):  # one round trip per PIPELINE windows
        batch = checks[first : first + PIPELINE]
        pipe = redis.pipeline(transaction=False)
        for budget, window, ledger in batch:
            ttl_ms = window.ttl_ms(SPENT_GRACE_S, now.timestamp())
            keys = [budget_keys(budget.pk, window.key).spent]
            script(keys=keys, args=[ledger, ttl_ms], client=pipe)
        for (budget, window, ledger), counter in zip(batch, pipe.execute(), strict=True):
            _compare(report, budget, window, ledger, int(counter), expected)
    if expected and report["raised"]:
        log.info("%s budget counters restored from the ledger (%s)", report["raised"], expected)
    return report
