from __future__ import annotations

from django.contrib import admin

from reports.models import CircuitEvent, ManagerScope


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


@admin.register(CircuitEvent)
class CircuitEventAdmin(admin.ModelAdmin):
    list_display = ["opened_at", "provider", "model", "kind", "reason"]
    list_filter = ["provider", "kind"]
    date_hierarchy = "opened_at"
