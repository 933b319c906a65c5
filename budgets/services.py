"""Budget enforcement: reserve the worst case before a call, settle the actual cost after it.

Every change to a budget counter is one atomic Lua script (budgets/lua.py) covering every
budget and window a request touches, so concurrent requests in any number of processes can
never spend past a hard limit. Redis errors propagate: the pipeline decides between 503 and
failing open per team.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone
from redis.asyncio import Redis

from budgets import exhaustion, lua
from budgets.keys import SPENT_GRACE_S, BudgetKeys, budget_keys
from budgets.windows import Window, current_windows
from gateway import runtime
from gateway.errors import BudgetExceeded
from gateway.money import format_usd, units_to_usd
from gateway.roundtrip import ScriptQueue, run_script
from gateway.snapshot import BudgetSnap, TeamSnap

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Slot:
    """One budget in one of its windows: the unit every counter is kept for."""

    budget: BudgetSnap
    window: Window

    @property
    def keys(self) -> BudgetKeys:
        return budget_keys(self.budget.team_id, self.budget.id, self.window.key)

    @property
    def limit_units(self) -> int | None:
        return self.budget.limit_units(self.window.name)

    def spent_ttl_ms(self) -> int:
        """The spent counter's and alert claims' lifetime from now (relative: Redis's clock)."""
        return self.window.ttl_ms(SPENT_GRACE_S)


@dataclass(frozen=True, slots=True)
class Reservation:
    """What admission held (gateway/admission.py), to be spent (`queue_spend`) or released;
    empty when no budget covers the request."""

    request_id: str
    units: int
    slots: tuple[Slot, ...]


@dataclass(frozen=True, slots=True)
class WindowStatus:
    slot: Slot
    spent: int
    reserved: int

    @property
    def remaining(self) -> int | None:
        limit = self.slot.limit_units
        return None if limit is None else max(0, limit - self.spent - self.reserved)


def slots_for(budgets: list[BudgetSnap], now: datetime | None = None) -> tuple[Slot, ...]:
    """Each budget's current daily and monthly window, in its team's time zone."""
    return tuple(Slot(b, w) for b in budgets for w in current_windows(b.timezone, now))


def hold_script_args(
    *, budgets: list[BudgetSnap], request_id: str, units: int, now: datetime
) -> tuple[Reservation, list[str], list[str | int]]:
    """The reservation a request would hold, with the KEYS and ARGV of the hold (lua.HOLD's
    `hold(keys, rid, units, ttl, limits)`), for a script that holds as part of more work
    (the admission script, gateway/admission.py)."""
    if units < 0:
        raise ValueError("units must be >= 0")
    reservation = Reservation(request_id, units, slots_for(budgets, now))
    ttl_ms = int(float(settings.GATEWAY["RESERVATION_TTL_S"]) * 1000)
    args: list[str | int] = [request_id, units, ttl_ms]
    args += [_enforced_limit(s) for s in reservation.slots]
    return reservation, _reservation_keys(reservation.slots), args


def refused(
    *, team: TeamSnap, reservation: Reservation, reply: list, now: datetime
) -> BudgetExceeded:
    """The 429 for a hold refused by a script: reply is (window index 1-based, spent,
    reserved), as `hold` returns them."""
    slot = reservation.slots[int(reply[0]) - 1]
    _note_refusal(runtime.aredis(), slot, int(reply[1]), reservation.units)
    return _refusal(
        team=team,
        slot=slot,
        spent=int(reply[1]),
        reserved=int(reply[2]),
        units=reservation.units,
        now=now,
    )


async def release(*, redis: Redis, reservation: Reservation) -> None:
    """Drop the reservation and add nothing (the call failed and cost nothing)."""
    if not reservation.slots:
        return
    await run_script(
        redis, lua.RELEASE, keys=_reservation_keys(reservation.slots), args=[reservation.request_id]
    )


async def budget_status(
    *, redis: Redis, budgets: list[BudgetSnap], now: datetime | None = None
) -> list[WindowStatus]:
    """Spent and reserved units of each budget's current windows (expired holds purged)."""
    slots = slots_for(budgets, now or timezone.now())
    if not slots:
        return []
    values = await run_script(redis, lua.PEEK, keys=_reservation_keys(slots), args=[])
    return [
        WindowStatus(s, int(values[2 * i]), int(values[2 * i + 1])) for i, s in enumerate(slots)
    ]


def _enforced_limit(slot: Slot) -> int:
    limit = slot.limit_units
    return limit if slot.budget.hard and limit is not None else -1


def _reservation_keys(slots: tuple[Slot, ...]) -> list[str]:
    return [key for s in slots for key in s.keys.reservation_keys]


def settled_marker_ttl_ms() -> int:
    """How long a settled request's marker guards against a repeated settle (a retried round
    trip): GATEWAY["SETTLED_MARKER_TTL_S"]."""
    return int(float(settings.GATEWAY.get("SETTLED_MARKER_TTL_S", 60)) * 1000)


def queue_spend(
    trip: ScriptQueue,
    *,
    slots: tuple[Slot, ...],
    request_id: str,
    units: int,
    marker_ttl_ms: int | None = None,
) -> int | None:
    """Queue the spend script (settle when `request_id` holds a reservation, else a plain
    spend) on a round trip; None when no budget covers the request. Hand its reply to
    `after_spend`.

    A request id is counted once: its settled marker lives `marker_ttl_ms` (default
    `settled_marker_ttl_ms()`; the lost-request sweep passes a longer one)."""
    if units < 0:
        raise ValueError("units must be >= 0")
    if not slots:
        return None
    ttl = settled_marker_ttl_ms() if marker_ttl_ms is None else marker_ttl_ms
    keys: list[str] = [slots[0].keys.settled(request_id)]
    args: list[str | int] = [request_id, units, max(1, ttl)]
    for s in slots:
        k = s.keys
        keys += [k.spent, k.reserved, k.holds, k.expiries, k.alerted]
        limit = s.limit_units
        thresholds = s.budget.thresholds
        args += [-1 if limit is None else limit, s.spent_ttl_ms(), len(thresholds), *thresholds]
    return trip.script(lua.SPEND, keys, args)


async def after_spend(*, redis: Redis, slots: tuple[Slot, ...], claimed: list) -> None:
    """Enqueue the alerts of the thresholds a spend claimed (the spend script's reply)."""
    for i in range(0, len(claimed), 3):
        slot = slots[int(claimed[i]) - 1]
        await _enqueue_alert(
            redis=redis, slot=slot, threshold=int(claimed[i + 1]), spent=int(claimed[i + 2])
        )


async def _enqueue_alert(*, redis: Redis, slot: Slot, threshold: int, spent: int) -> None:
    from budgets.tasks import send_budget_alert

    try:
        await sync_to_async(send_budget_alert.delay)(
            slot.budget.id, slot.window.name, slot.window.key, threshold, spent
        )
    except Exception:
        # The broker is down. Give the claim back: the next spend in this window claims it
        # again (a claim means "reached and not yet enqueued", not "crossed just now").
        log.exception("could not enqueue the %s%% alert of budget %s", threshold, slot.budget.id)
        await redis.hdel(slot.keys.alerted, str(threshold))


def _note_refusal(redis: Redis, slot: Slot, spent: int, units: int) -> None:
    """A hard budget refused: if it is exhausted, claim and send its alert, in the background
    (budgets/exhaustion.py)."""
    limit = slot.limit_units
    if limit is None or not exhaustion.is_exhausted(limit=limit, spent=spent, need=units):
        return  # refused because of requests in flight: it passes once they settle
    note = exhaustion.claim_and_alert(
        redis=redis,
        team_id=slot.budget.team_id,
        budget_id=slot.budget.id,
        window=slot.window.name,
        window_key=slot.window.key,
        spent=spent,
        claim_ttl_ms=slot.spent_ttl_ms(),
    )
    try:
        runtime.spawn(note)
    except RuntimeError:  # no running event loop (a sync caller): nothing to note it on
        note.close()


def _refusal(
    *, team: TeamSnap, slot: Slot, spent: int, reserved: int, units: int, now: datetime
) -> BudgetExceeded:
    b, w = slot.budget, slot.window
    if b.feature_id is None:
        scope, owner = "team", team.name
    else:
        names = {f.id: f.name for f in team.features.values()}
        scope, owner = "feature", f"{team.name}/{names.get(b.feature_id, b.feature_id)}"
    target = f'{scope} budget of "{owner}"'
    limit = slot.limit_units or 0
    message = (
        f"Budget exceeded: the {w.name} {target} ({w.key}) has spent {_usd(spent)}"
        f" (plus {_usd(reserved)} reserved by requests in flight) of its {_usd(limit)} limit,"
        f" and this request needs up to {_usd(units)}. It resets at {w.end.isoformat()}."
    )
    error = BudgetExceeded(
        message, headers={"Retry-After": str(w.seconds_left(now)), "x-should-retry": "false"}
    )
    error.refusal = {
        "kind": "budget",
        "budget_id": b.id,
        "scope": scope,
        "owner": owner,
        "window": w.name,
        "window_key": w.key,
        "spent_usd": _text(spent),
        "reserved_usd": _text(reserved),
        "limit_usd": _text(limit),
        "needed_usd": _text(units),
        "resets_at": w.end.isoformat(),
    }
    return error


def _text(units: int) -> str:
    return format_usd(units_to_usd(units))


def _usd(units: int) -> str:
    return "$" + format_usd(units_to_usd(units))
