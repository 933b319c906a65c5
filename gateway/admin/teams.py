"""Teams and their features: budgets, keys and live spend on the team's page."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.db import models
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from gateway import outputcaps
from gateway.admin.common import FallbackWarnings, Labelled, labelled_column
from gateway.adminfilters import (
    AutocompleteFilter,
    autocomplete_media,
)
from gateway.models import (
    ApiKey,
    Feature,
    Team,
    UsageRecord,
)
from gateway.money import format_usd


class FeatureInline(Labelled, admin.TabularInline):
    model = Feature
    fields = ("name", "default_cache_ttl", "cache_sampled", "output_cap")
    extra = 1


@admin.register(Team)
class TeamAdmin(FallbackWarnings, Labelled, admin.ModelAdmin):
    list_display = (
        "name",
        "timezone",
        "cache_scope",
        "rpm_limit_shown",
        "tpm_limit_shown",
        "feature_count",
        "budget_fail_open",
        "store_content",
        "created_at",
    )
    list_filter = ("cache_scope", "budget_fail_open", "store_content")
    search_fields = ("name",)
    ordering = ("name",)  # also the autocomplete's (the annotation drops Meta.ordering)
    inlines = [FeatureInline]
    rpm_limit_shown = labelled_column("rpm_limit", "requests per minute")
    tpm_limit_shown = labelled_column("tpm_limit", "tokens per minute")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(_features=Count("features"))

    def change_view(self, request: HttpRequest, object_id: str, form_url="", extra_context=None):
        team = self.get_object(request, unquote(object_id))
        if team is not None:
            extra_context = {**(extra_context or {}), "summary": team_summary(team)}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="features", ordering="_features")
    def feature_count(self, obj: Team) -> int:
        return obj._features  # type: ignore[attr-defined]  # annotated by get_queryset


def team_summary(team: Team) -> dict:
    """What the team page shows beside the form: its budgets with their live spend, its keys
    and this month's spend from the ledger (the month of the team's time zone)."""
    from budgets.admin import live_spend
    from budgets.models import Budget
    from budgets.windows import current_windows

    _, month = current_windows(team.timezone)
    ledger = UsageRecord.objects.filter(team=team, created_at__gte=month.start).aggregate(
        requests=Count("id"),
        refused=Count("id", filter=models.Q(status=UsageRecord.Status.REFUSED)),
        cost=models.Sum("cost_usd"),
    )
    budgets = list(
        Budget.objects.filter(team=team).select_related("team", "feature", "feature__team")
    )
    spend = live_spend(budgets)
    live = [(budget, *spend.get(budget.pk, ("—", "—"))) for budget in budgets]
    keys = list(ApiKey.objects.filter(team=team).select_related("feature"))
    return {
        "month": month.key,
        "month_start": month.start,
        "requests": ledger["requests"],
        "refused": ledger["refused"],
        "spend": "$" + format_usd(ledger["cost"] or Decimal(0)),
        "budgets": live,
        "keys": keys,
    }


@admin.register(Feature)
class FeatureAdmin(Labelled, admin.ModelAdmin):
    list_display = (
        "name",
        "team",
        "default_cache_ttl",
        "cache_sampled",
        "output_cap",
        "learned_cap",
        "effective_output_cap",
    )
    list_filter = (("team", AutocompleteFilter),)  # a search box, not every team
    search_fields = ("name", "team__name")
    list_select_related = ("team",)

    @property
    def media(self):
        return super().media + autocomplete_media(Feature._meta.get_field("team"), self.admin_site)

    fields = (
        "team",
        "name",
        "default_cache_ttl",
        "cache_sampled",
        "output_cap",
        "learned_cap",
        "learned_output_cap_at",
        "effective_output_cap",
    )
    readonly_fields = ("learned_cap", "learned_output_cap_at", "effective_output_cap")

    @admin.display(description="learned output cap", ordering="learned_output_cap")
    def learned_cap(self, obj: Feature) -> str:
        if obj.learned_output_cap is None:
            return "not learned yet (too few answers in the window)"
        return str(obj.learned_output_cap)

    @admin.display(description="effective output cap")
    def effective_output_cap(self, obj: Feature) -> str:
        """What a request without max_tokens gets, and where the figure comes from."""
        if obj.pk is None:
            return "—"
        if obj.output_cap:
            source = "set here"
        elif obj.learned_output_cap:
            source = "learned"
        else:
            source = "the default, GATEWAY_OUTPUT_CAP_DEFAULT"
        return f"{outputcaps.effective_cap(obj)} tokens ({source}; never above the model's max)"
