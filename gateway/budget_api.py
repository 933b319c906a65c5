"""GET /v1/budget: what a key's team and feature may still spend, per window.

An API endpoint (Bearer key, OpenAI's error envelope), so it lives with the API, above the
pipeline's `authenticate` and the budgets app's `budget_status` (docs/architecture.md).
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import RedisError

from budgets.services import WindowStatus, budget_status
from gateway.auth import authenticate
from gateway.errors import GatewayError, ServiceUnavailable, error_response
from gateway.money import format_usd, units_to_usd
from gateway.runtime import aredis
from gateway.snapshot import BudgetSnap, KeySnap, TeamSnap


@csrf_exempt
async def budget(request: HttpRequest) -> JsonResponse:
    if request.method != "GET":
        err = GatewayError("Only GET is allowed here.", code="method_not_allowed")
        err.status = 405
        return error_response(err, extra_headers={"Allow": "GET"})
    try:
        key, team, _ = await authenticate(request.headers.get("Authorization"), request.META)
        # A key pinned to a feature sees that feature's budgets; an unpinned key may name any
        # feature of its team, so it sees all of them.
        budgets = sorted(
            (
                b
                for b in team.budgets
                if b.feature_id is None or key.feature_id in (None, b.feature_id)
            ),
            key=lambda b: (b.feature_id is not None, b.feature_id or 0, b.id),
        )
        statuses = await budget_status(redis=aredis(), budgets=budgets)
    except GatewayError as exc:
        return error_response(exc)
    except RedisError:
        return error_response(ServiceUnavailable("Budget counters are unavailable; retry shortly."))
    return JsonResponse(_shape(team=team, key=key, budgets=budgets, statuses=statuses))


def _usd(units: int | None) -> str | None:
    return None if units is None else format_usd(units_to_usd(units))


def _shape(
    *, team: TeamSnap, key: KeySnap, budgets: list[BudgetSnap], statuses: list[WindowStatus]
) -> dict:
    names = {f.id: f.name for f in team.features.values()}
    windows: dict[int, list[dict]] = {}
    for s in statuses:
        windows.setdefault(s.slot.budget.id, []).append(
            {
                "window": s.slot.window.name,
                "window_key": s.slot.window.key,
                "spent_usd": _usd(s.spent),
                "reserved_usd": _usd(s.reserved),
                "limit_usd": _usd(s.slot.limit_units),
                "remaining_usd": _usd(s.remaining),
                "resets_at": s.slot.window.end.isoformat(),
            }
        )
    return {
        "object": "budget_status",
        "team": team.name,
        "feature": names.get(key.feature_id) if key.feature_id else None,
        "budgets": [
            {
                "id": b.id,
                "scope": "team" if b.feature_id is None else "feature",
                "feature": names.get(b.feature_id) if b.feature_id else None,
                "hard": b.hard,
                "reservation": b.reservation,
                "alert_thresholds": list(b.thresholds),
                "windows": windows.get(b.id, []),
            }
            for b in budgets
        ],
    }
