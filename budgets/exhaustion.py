"""A hard budget that refuses requests says so: the "budget exhausted" alert.

Each request reserves its worst case, so a hard budget's spend stops short of its limit and
its 100 % threshold would never be reached by spend alone. The rule instead: a hard budget
is **exhausted** for a request it refuses when what is left of its limit (limit - settled
spend) cannot cover that request's own need (its worst-case reservation), even with nothing
else in flight. A refusal only caused by other requests' reservations (they will settle for
less, or be released) is not exhaustion.

The first refusal that finds its budget exhausted claims the 100 % threshold's field in the
window's `alerted` hash (HSETNX: one winner across every process and instance) and enqueues
the alert ("budget exhausted: requests are being refused") on the budget's channels. So a
window sends either "reached 100 %" (spend got there) or "exhausted", never both, and only
once. The request path does no database work: the decision uses the figures the refusal
already has, and the claim is one Redis round trip in the background.
"""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async

from budgets.keys import EXHAUSTED_THRESHOLD, budget_keys

log = logging.getLogger(__name__)


def is_exhausted(*, limit: int, spent: int, need: int) -> bool:
    """Whether the budget's remainder cannot cover a request needing `need` units."""
    return limit - spent < need


async def claim_and_alert(
    *,
    redis,
    team_id: int,
    budget_id: int,
    window: str,
    window_key: str,
    spent: int,
    claim_ttl_ms: int,
) -> bool:
    """Claim the window's exhaustion alert and enqueue it; False when another refusal (in any
    process) already did. Never raises: the refusal is answered whatever happens here."""
    alerted = budget_keys(team_id, budget_id, window_key).alerted
    field = str(EXHAUSTED_THRESHOLD)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hsetnx(alerted, field, 1)
            pipe.pexpire(alerted, claim_ttl_ms)  # as the spend script does: the window's life
            won, _ = await pipe.execute()
        if not won:
            return False
        from budgets.tasks import send_budget_alert

        await sync_to_async(send_budget_alert.delay)(
            budget_id, window, window_key, EXHAUSTED_THRESHOLD, spent, exhausted=True
        )
        return True
    except Exception as exc:  # Redis or the broker away: give the claim back, the next refusal
        log.warning("could not send the exhausted alert of budget %s: %s", budget_id, exc)
        try:
            await redis.hdel(alerted, field)
        except Exception:
            pass
        return False
