"""A hard budget that refuses requests says so: the "budget exhausted" alert.

Each request reserves its worst case, so a hard budget's spend stops short of its limit and
its 100 % threshold would never be reached by spend alone. The rule instead: a hard budget
is exhausted when what is left of its limit (limit - settled spend) cannot cover a typical
request, and the first refusal that finds it so sends one "budget exhausted: requests are
being refused" alert per budget and window, on the budget's channels.

- A typical request is the mean cost of the budget's last `TYPICAL_SAMPLE` priced requests
  that reached a provider (the ledger, any window); with no such history, the refused
  request's own worst case.
- The alert's claim is the 100 % threshold's field in the window's `alerted` hash (HSETNX:
  one winner across every process), so a budget sends either "reached 100 %" (spend got
  there) or "exhausted", never both.

The request path only notes the refusal: one Redis round trip that takes a short-lived gate
(`REFUSAL_CHECK_GAP_MS`) and, if it won it and the alert was not claimed yet, queues the
`check_budget_exhausted` Celery task. The ledger query and the claim happen in that task.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from asgiref.sync import sync_to_async

from budgets.keys import EXHAUSTED_THRESHOLD, REFUSAL_CHECK_GAP_MS, SPENT_GRACE_S, budget_keys
from gateway.money import usd_to_units

log = logging.getLogger(__name__)

TYPICAL_SAMPLE = 50


async def note_refusal(*, redis, budget_id: int, window: str, window_key: str, units: int):
    """Queue an exhaustion check for a hard budget that has just refused a request, unless
    its alert was already claimed or a check was queued less than the gap ago. Never raises:
    the refusal is answered whatever happens here."""
    keys = budget_keys(budget_id, window_key)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hexists(keys.alerted, str(EXHAUSTED_THRESHOLD))
            pipe.set(keys.refusal_check, 1, nx=True, px=REFUSAL_CHECK_GAP_MS)
            alerted, gate = await pipe.execute()
        if alerted or not gate:
            return
        from budgets.tasks import check_budget_exhausted

        await sync_to_async(check_budget_exhausted.delay)(budget_id, window, window_key, units)
    except Exception as exc:  # Redis or the broker away: the next refusal tries again
        log.warning("could not queue the exhaustion check of budget %s: %s", budget_id, exc)
        try:
            await redis.delete(keys.refusal_check)
        except Exception:
            pass


def typical_request_units(budget, fallback_units: int) -> int:
    """The mean cost of the budget's recent priced requests that reached a provider."""
    from gateway.models import UsageRecord

    rows = UsageRecord.objects.filter(
        team_id=budget.team_id, cost_usd__gt=0, unpriced=False
    ).exclude(cache=UsageRecord.Cache.HIT)
    if budget.feature_id is not None:
        rows = rows.filter(feature_id=budget.feature_id)
    costs = list(rows.order_by("-created_at").values_list("cost_usd", flat=True)[:TYPICAL_SAMPLE])
    if not costs:
        return fallback_units
    return max(1, usd_to_units(sum(costs, Decimal(0)) / len(costs)))


def check(*, budget_id: int, window: str, window_key: str, units: int, redis) -> dict:
    """Claim and queue the exhaustion alert if the budget's remainder is below a typical
    request. Returns what it found (for the task's result and the tests)."""
    from budgets.models import Budget

    budget = Budget.objects.filter(pk=budget_id, enabled=True, hard=True).first()
    limit = budget.limit_for(window) if budget else None
    if limit is None:
        return {"exhausted": False, "reason": "no hard limit"}
    keys = budget_keys(budget_id, window_key)
    spent = int(redis.get(keys.spent) or 0)
    remaining = max(0, usd_to_units(limit) - spent)
    typical = typical_request_units(budget, units)
    found = {"remaining": remaining, "typical": typical, "spent": spent}
    if remaining >= typical:
        return {**found, "exhausted": False, "reason": "a typical request still fits"}
    if not redis.hsetnx(keys.alerted, str(EXHAUSTED_THRESHOLD), 1):
        return {**found, "exhausted": True, "claimed": False}
    if redis.pttl(keys.alerted) < 0:  # a new hash: live as long as the window's counters
        lifetime = redis.pttl(keys.spent)
        redis.pexpire(keys.alerted, lifetime if lifetime > 0 else SPENT_GRACE_S * 1000)
    from budgets.tasks import send_budget_alert

    try:
        send_budget_alert.delay(
            budget_id, window, window_key, EXHAUSTED_THRESHOLD, spent, exhausted=True
        )
    except Exception:
        redis.hdel(keys.alerted, str(EXHAUSTED_THRESHOLD))  # give the claim back
        raise
    return {**found, "exhausted": True, "claimed": True}
