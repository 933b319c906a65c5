"""A hard budget near its limit while the Redis primary of its team is killed (SIGKILL), for
each topology that can lose a primary: Sentinel and Cluster (test_sentinel.py,
test_redis_cluster.py).

A fail-closed team with a small hard budget is under load. Once it has spent 40 % of its
limit, the primary holding its keys is killed and a replica takes over by itself. The team
goes on until the budget refuses it (429 `budget_exceeded`). What a kill can cost a budget is
what the dead primary acknowledged and had not yet replicated: the holds and increments of
the requests in flight at that moment, and the ledger records queued on it. So what the
provider billed (every answer's X-Gateway-Cost-USD) never passes the limit by more than the
worst case of those requests; reconcile then raises the counter to the ledger, and a counter
left above it is above by the cost of lost records at most (the budget errs toward refusing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import redis as redis_sync

from budgets.keys import budget_keys
from budgets.reconcile import ledger_units, rebuild_counters
from budgets.windows import current_windows
from gateway.models import UsageRecord
from gateway.money import usd_to_units
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
)
from tests.processes import wait_for
from tests.reliability.test_redis_restart import DEADLINE_S, Load


def hard_budget_across_a_kill(
    gateways,
    url: str,
    *,
    client: Callable[[], redis_sync.Redis],
    primary_port: Callable[[str], int],
    kill: Callable[[int], None],
) -> None:
    """`client()` is a new client that reaches the current primary of any key,
    `primary_port(key)` the port of that primary, `kill(port)` kills the server on it."""
    provider = make_provider(options={"latency_ms": 20})
    make_model("sim-model", provider)
    team = make_team("tight", budget_fail_open=False)
    make_feature(team, "chatbot")
    # Each answer costs about $0.00006 and holds $0.0082 while in flight (4,096 tokens out):
    # about 600 answers before the refusals, the last 250 of them after the kill.
    limit = Decimal("0.05")
    budget = make_budget(team, daily_limit_usd=limit, monthly_limit_usd=limit * 10, hard=True)
    (gateway,) = gateways(1, redis_url=url, GATEWAY_LEDGER_IN_PROCESS="1")
    window = current_windows(team.timezone)[0]
    spent_key = budget_keys(team.pk, budget.pk, window.key).spent
    before = client()
    load = Load(gateway.base_url, {"tight": make_key(team)[1]})
    load.thread.start()
    try:
        wait_for(
            lambda: int(before.get(spent_key) or 0) >= usd_to_units(limit) * 4 // 10,
            timeout=DEADLINE_S,
            what="40 % of the budget spent",
        )
        old = primary_port(spent_key)
        kill(old)
        killed = time.monotonic()
        wait_for(
            lambda: primary_port(spent_key) != old,
            timeout=DEADLINE_S,
            what="a replica promoted in place of the killed primary",
        )
        promoted = time.monotonic() + 1.0  # the gateway finds it on its next error
        wait_for(
            lambda: (
                sum(1 for r in load.results if r.code == "budget_exceeded" and r.sent > promoted)
                >= 10
            ),
            timeout=DEADLINE_S,
            what="the budget refusing on the new primary",
        )
    finally:
        load.stopping.set()
        load.thread.join(30)
    results = load.results
    assert {r.status for r in results} <= {200, 429, 503}, gateway.output()
    assert all(killed <= r.done and r.sent <= promoted for r in results if r.status == 503)
    assert {r.code for r in results if r.status == 429} == {"budget_exceeded"}
    assert sum(1 for r in results if r.status == 200 and r.sent > promoted) > 0

    gateway.stop()  # its lifespan drains the ledger once more
    records = UsageRecord.objects.filter(team=team)
    held = {Decimal(r.refusal["needed_usd"]) for r in records.exclude(refusal=None)}
    assert len(held) == 1, held  # every request holds the same worst case
    answered = [r for r in results if r.status == 200]
    served = sum(r.cost_usd for r in answered)  # what the provider bills, lost records included
    assert 0 < served <= limit + 2 * held.pop()  # Load keeps 2 in flight
    recorded = set(records.values_list("request_id", flat=True))
    missing = [r for r in answered if r.request_id not in recorded]
    assert all(abs(r.done - killed) < 1.0 for r in missing), [r.done - killed for r in missing]
    after = client()  # the one from before the kill still knows the dead node
    rebuild_counters(redis=after)
    counter = int(after.get(spent_key) or 0)
    in_ledger = ledger_units(budget=budget, window=window)
    lost = sum(usd_to_units(r.cost_usd) for r in missing)
    assert in_ledger <= counter <= in_ledger + lost, (counter, in_ledger, lost)
