"""The ledger in the admin: usage records (refusals explained) and dead letters."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from gateway.admin.common import Labelled
from gateway.adminfilters import (
    AutocompleteFilter,
    CappedCountPaginator,
    EndpointFilter,
    KeyAutocompleteFilter,
    ProviderFilter,
    ServedModelFilter,
    autocomplete_media,
)
from gateway.models import (
    DeadLetter,
    UsageRecord,
)
from gateway.money import format_usd


def refusal_reason(record: UsageRecord) -> str:
    """Why a request was refused, in a sentence: which budget or rate limit, and the figures
    (from the record's `refusal`, written when it was refused)."""
    r = record.refusal or {}
    if r.get("kind") == "rate_limit":
        who = (
            f"key {r.get('key_prefix', '?')}…"
            if r.get("scope") == "key"
            else (f"team {r.get('team', '?')}")
        )
        return f"rate limit {r.get('metric', '?')} {r.get('limit', '?')} on {who}"
    if "window" in r and "limit_usd" in r:
        owner = r.get("owner")
        target = f"{r.get('scope', 'team')} {owner}" if owner else f"#{r.get('budget_id', '?')}"
        return (
            f"{r['window']} budget ${_cents(r['limit_usd'])} of {target}: spent "
            f"${_cents(r.get('spent_usd', '0'))} + reserved ${_cents(r.get('reserved_usd', '0'))}"
            f", needed ${_cents(r.get('needed_usd', '0'))}"
        )
    if record.status == UsageRecord.Status.OK:
        return ""
    return record.error_type.replace("_", " ")


def _cents(text: str) -> str:
    """Dollars as people read them: 2 decimals, or more when a cent would round to zero."""
    try:
        value = Decimal(text)
    except ArithmeticError:
        return text
    if value == value.quantize(Decimal("0.01")) or abs(value) >= 1:
        return f"{value:,.2f}"
    return format(value.normalize(), "f")


class ReasonFilter(admin.SimpleListFilter):
    """Refusals by what refused them; errors by their type."""

    title = "reason"
    parameter_name = "reason"
    CHOICES = {
        "budget": ("Budget (any)", {"error_type": "budget_exceeded"}),
        "budget_daily": (
            "Budget: daily",
            {"error_type": "budget_exceeded", "refusal__window": "daily"},
        ),
        "budget_monthly": (
            "Budget: monthly",
            {"error_type": "budget_exceeded", "refusal__window": "monthly"},
        ),
        "rate": ("Rate limit (any)", {"error_type": "rate_limited"}),
        "rate_key": ("Rate limit: key", {"error_type": "rate_limited", "refusal__scope": "key"}),
        "rate_team": (
            "Rate limit: team",
            {"error_type": "rate_limited", "refusal__scope": "team"},
        ),
    }

    def lookups(self, request, model_admin):
        return [(k, label) for k, (label, _) in self.CHOICES.items()] + [
            ("other", "Other refusal (e.g. Redis down)"),
            ("error", "Errors"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value in self.CHOICES:
            return queryset.filter(**self.CHOICES[value][1])
        if value == "other":
            return queryset.filter(status=UsageRecord.Status.REFUSED).exclude(
                error_type__in=["budget_exceeded", "rate_limited"]
            )
        if value == "error":
            return queryset.exclude(status__in=[UsageRecord.Status.OK, UsageRecord.Status.REFUSED])
        return queryset


@admin.register(UsageRecord)
class UsageRecordAdmin(Labelled, admin.ModelAdmin):
    """The ledger: read-only, because budgets and reports are rebuilt from it. The list shows
    the outcome and its reason first and fits 1280 px; the record's page has every field."""

    list_display = (
        "created_at",
        "outcome",
        "reason",
        "caller",
        "served_model",
        "tokens",
        "cost",
        "latency_ms",
    )
    list_display_links = ("created_at",)
    # Nothing here reads the whole ledger or lists every team, feature or key: those three
    # are search boxes (adminfilters.AutocompleteFilter), the models and providers come from
    # their own small tables, dates are links (no DISTINCT over the ledger as a date
    # hierarchy needs), and the count stops at adminfilters.COUNT_CAP.
    list_filter = (
        "status",
        ReasonFilter,
        ("created_at", admin.DateFieldListFilter),
        ("team", AutocompleteFilter),
        ("feature", AutocompleteFilter),
        ("api_key", KeyAutocompleteFilter),
        ServedModelFilter,
        ProviderFilter,
        "cache",
        EndpointFilter,
        "stream",
    )
    search_fields = ("request_id",)
    search_help_text = "The exact request id (a response's X-Request-ID header)."
    list_select_related = ("team", "feature__team")
    show_full_result_count = False  # no second COUNT(*) over a large ledger
    paginator = CappedCountPaginator

    @property
    def media(self):
        team = UsageRecord._meta.get_field("team")
        return super().media + autocomplete_media(team, self.admin_site)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        """An exact match on the unique request id (its index), not a case-insensitive
        substring scan of the whole ledger."""
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(request_id=term), False

    @admin.display(description="outcome", ordering="status")
    def outcome(self, obj: UsageRecord) -> str:
        if obj.status == UsageRecord.Status.OK:
            return "ok"
        return f"{obj.status} {obj.http_status}"

    @admin.display(description="reason")
    def reason(self, obj: UsageRecord) -> str:
        return refusal_reason(obj)

    @admin.display(description="team/feature", ordering="team__name")
    def caller(self, obj: UsageRecord) -> str:
        return str(obj.feature) if obj.feature_id else obj.team.name

    readonly_fields = ("reason",)

    def get_fields(self, request: HttpRequest, obj=None):
        """The record's page: the reason in words first, then every field."""
        return ["reason", *(f for f in super().get_fields(request, obj) if f != "reason")]

    @admin.display(description="cost", ordering="cost_usd")
    def cost(self, obj: UsageRecord) -> str:
        if obj.unpriced:
            return "unknown (unpriced)"
        return "$" + format_usd(obj.cost_usd)

    @admin.display(description="tokens in / out")
    def tokens(self, obj: UsageRecord) -> str:
        return f"{obj.input_tokens:,} / {obj.output_tokens:,}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(DeadLetter)
class DeadLetterAdmin(Labelled, admin.ModelAdmin):
    """Ledger records the database refused, set aside so the queue keeps flowing. Read-only:
    replay one after a fix (the action below, or `manage.py deadletters --replay ID`)."""

    list_display = ("id", "request_id", "team_id", "attempts", "first_seen", "last_seen", "reason")
    search_fields = ("request_id", "error")
    readonly_fields = (
        "request_id",
        "team_id",
        "attempts",
        "first_seen",
        "last_seen",
        "error",
        "raw",
        "digest",
    )
    fields = readonly_fields
    actions = ("replay",)

    @admin.display(description="error")
    def reason(self, obj: DeadLetter) -> str:
        return obj.error[:120]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Replay into the ledger (after a fix)", permissions=["delete"])
    def replay(self, request: HttpRequest, queryset: QuerySet) -> None:
        from gateway import ledger

        done, refused = 0, []
        for dead in queryset:
            if ledger.replay(dead):
                done += 1
            else:
                refused.append(str(dead.pk))
        if done:
            self.message_user(request, f"{done} record(s) replayed into the ledger.")
        if refused:
            self.message_user(
                request,
                f"Refused again, kept: {', '.join(refused)} (see their error).",
                level=messages.WARNING,
            )
