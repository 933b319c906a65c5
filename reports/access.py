"""Who may read the reports, and which teams they see.

Readers are superusers, staff, members of the "managers" group and holders of the
`reports.view_all_teams` permission, signed in with a session (managers at /reports/login/).
Least privilege: superusers and holders of `view_all_teams` see every team; every other
reader sees exactly the teams of their `ManagerScope`, and none without one (the pages say
so). A request that carries an `Authorization` header is an API client (a service key), never
a report reader.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse

from reports.models import ManagerScope

MANAGERS_GROUP = "managers"


VIEW_ALL_TEAMS = "reports.view_all_teams"


def is_reader(user) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    return (
        user.is_superuser
        or user.is_staff
        or user.groups.filter(name=MANAGERS_GROUP).exists()
        or user.has_perm(VIEW_ALL_TEAMS)
    )


def sees_every_team(user) -> bool:
    """Superusers (who hold every permission) and holders of `view_all_teams`."""
    return user.is_active and user.has_perm(VIEW_ALL_TEAMS)


def allowed_team_ids(user) -> frozenset[int] | None:
    """The teams a reader may see; None means every team, an empty set none at all."""
    if sees_every_team(user):
        return None
    scope = ManagerScope.objects.filter(user=user).first()
    if scope is None:
        return frozenset()
    return frozenset(scope.teams.values_list("id", flat=True))


def _carries_credentials(request: HttpRequest) -> bool:
    return "HTTP_AUTHORIZATION" in request.META


def reader_required(*, api: bool) -> Callable:
    """Pages redirect strangers to the login page; the JSON API answers 401/403 instead."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if _carries_credentials(request):
                return _deny(api, 403, "API keys cannot read reports; sign in as a manager.")
            if not request.user.is_authenticated:
                if api:
                    return _deny(api, 401, "Sign in to read reports.")
                return redirect_to_login(request.get_full_path())
            if not is_reader(request.user):
                return _deny(api, 403, "Reports are for staff and managers.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def _deny(api: bool, status: int, message: str) -> HttpResponse:
    if api:
        return JsonResponse(
            {"error": {"message": message, "type": "permission_denied"}}, status=status
        )
    return HttpResponse(message, status=status, content_type="text/plain")
