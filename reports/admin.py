from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from gateway.models import Baseline, ModelPrice
from reports.models import CircuitEvent, Incident, ManagerScope


@admin.register(ManagerScope)
class ManagerScopeAdmin(admin.ModelAdmin):
    list_display = ["user", "team_list"]
    filter_horizontal = ["teams"]
    autocomplete_fields = ["user"]

    @admin.display(description="Teams")
    def team_list(self, scope: ManagerScope) -> str:
        return ", ".join(t.name for t in scope.teams.all()) or "(none)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user").prefetch_related("teams")


class ReportAccessInline(admin.StackedInline):
    """A user's teams in the dashboards, edited on the user's own page. Put the user in the
    `managers` group to let them sign in at /reports/login/; superusers and holders of the
    "Can read the reports of every team" permission see every team whatever is chosen here."""

    model = ManagerScope
    can_delete = False
    max_num = 1
    filter_horizontal = ["teams"]
    verbose_name = verbose_name_plural = "report access"


User = get_user_model()


class UserWithReportAccessAdmin(UserAdmin):
    """Django's user admin (django.contrib.auth registers it first) plus the report access."""

    inlines = [*UserAdmin.inlines, ReportAccessInline]


admin.site.unregister(User)
admin.site.register(User, UserWithReportAccessAdmin)


@admin.register(CircuitEvent)
class CircuitEventAdmin(admin.ModelAdmin):
    """Written by the circuit breakers (gateway/circuit.py): a record of what happened, so
    nobody adds or edits one here. Superusers may delete old ones."""

    list_display = ["opened_at", "provider", "model", "kind", "reason"]
    list_filter = ["provider", "kind"]
    date_hierarchy = "opened_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser


@admin.register(Incident)
class IncidentAdmin(CircuitEventAdmin):
    """Written by the detector task (reports/incidents.py): read-only, like circuit events."""

    list_display = [
        "started_at",
        "ended_at",
        "kind",
        "team",
        "feature",
        "provider",
        "requests_refused",
        "spend_usd",
        "alerted_at",
    ]
    list_filter = ["kind", "team"]
    list_select_related = ["team", "feature"]
    date_hierarchy = "started_at"


@admin.register(Baseline)
class BaselineAdmin(admin.ModelAdmin):
    """What the reports' savings are measured against (registered here, next to the pages
    that use it). The row without a team is the default for every team without its own."""

    list_display = ["__str__", "team", "model", "cache"]
    list_select_related = ["team", "model"]
    autocomplete_fields = ["team", "model"]


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Kept by saving a model (a changed price appends a dated row); read-only here so the
    history stays a record of what was charged."""

    list_display = ["model", "valid_from", "input_per_mtok", "output_per_mtok", "recorded_at"]
    list_filter = ["model"]
    date_hierarchy = "valid_from"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
