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
        calls = [
            (
                budget_keys(budget.team_id, budget.pk, window.key).spent,
                [ledger, window.ttl_ms(SPENT_GRACE_S, now.timestamp())],
            )
            for budget, window, ledger in batch
        ]
        counters = _run_each(redis, script, calls)
        for (budget, window, ledger), counter in zip(batch, counters, strict=True):
            _compare(report, budget, window, ledger, int(counter), expected)
    if expected and report["raised"]:
        log.info("%s budget counters restored from the ledger (%s)", report["raised"], expected)
    return report


def _run_each(redis, script, calls: list[tuple[str, list]]) -> list:
    """Run `script` once per (key, args), in one pipeline per Redis node: redis-py's cluster
    pipeline refuses scripts, so on a cluster each node's share goes on that node's own
    client (the keys of different teams live on different nodes)."""
    if hasattr(redis, "connection_pool"):  # one Redis
        by_node = {None: (redis, list(range(len(calls))))}
    else:
        by_node = {}
        for i, (key, _) in enumerate(calls):
            node = redis.get_node_from_key(key)
            by_node.setdefault(node.name, (redis.get_redis_connection(node), []))[1].append(i)
    replies: list = [None] * len(calls)
    for client, indexes in by_node.values():
        pipe = client.pipeline(transaction=False)
        for i in indexes:
            script(keys=[calls[i][0]], args=calls[i][1], client=pipe)
        for i, reply in zip(indexes, pipe.execute(), strict=True):
            replies[i] = reply
    return replies
