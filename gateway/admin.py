"""The admin: every record an operator edits, in words a non-developer understands.

API key secrets are shown once, on the page that follows creation, and never stored: only
their hash and a short prefix are. Provider secrets are never in the database at all: a
provider names the environment variable that holds its key, and the admin shows only
whether that variable is set in this process.
"""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from gateway import configversion, keyvars, outputcaps
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
    ApiKey,
    DeadLetter,
    Fallback,
    Feature,
    LanguageModel,
    Provider,
    RouteRule,
    RouteStep,
    Team,
    UsageRecord,
)
from gateway.money import format_usd

admin.site.site_header = "LLM gateway"
admin.site.site_title = "LLM gateway admin"
admin.site.index_title = "Teams, keys, providers, models, routes, budgets and usage"


# Field labels in words, set on the forms (not the models, so no migration): "Rpm limit"
# and "Daily limit usd" read as "Requests per minute" and "Daily limit (USD)".
LABELS = {
    "rpm_limit": "Requests per minute",
    "tpm_limit": "Tokens per minute",
    "output_cap": "Output cap (tokens)",
    "default_cache_ttl": "Cache lifetime (seconds)",
    "cache_sampled": "Cache sampled answers (regenerate returns the same text)",
    "max_prompt_tokens": "Max prompt tokens",
    "max_output_tokens": "Max output tokens",
    "connect_timeout": "Connect timeout (seconds)",
    "read_timeout": "Read timeout (seconds)",
    "api_key_env": "API key environment variable",
    "upstream_id": "Upstream model id",
    "input_per_mtok": "Input price",
    "output_per_mtok": "Output price",
    "cached_input_per_mtok": "Cached input price",
    "cache_write_per_mtok": "Cache write price",
    "budget_fail_open": "Let requests through when Redis is down",
}


class Labelled:
    """Mixin for admins and inlines: their form fields carry the labels above."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)  # type: ignore[misc]
        if field is not None and db_field.name in LABELS:
            field.label = LABELS[db_field.name]
        return field


class FallbackWarnings:
    """Mixin for the admins whose edits change fallback prices or budgets: after a save, the
    warnings of gateway/fallbackcheck.py that name the saved record, as warning messages."""

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)  # type: ignore[misc]
        show_fallback_warnings(request, str(getattr(form.instance, "name", form.instance)))


def show_fallback_warnings(request: HttpRequest, name: str) -> None:
    from gateway import fallbackcheck

    for line in fallbackcheck.warnings():
        if name in line:
            messages.warning(request, line)


def labelled_column(name: str, label: str):
    """A list column showing a model field under a readable heading."""

    @admin.display(description=label, ordering=name)
    def column(self, obj):
        value = getattr(obj, name)
        return "—" if value is None else value

    column.__name__ = name + "_shown"
    return column


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


class ActiveKeyFilter(admin.SimpleListFilter):
    title = "active"
    parameter_name = "active"

    def lookups(self, request, model_admin):
        return [("yes", "Active"), ("no", "Revoked or expired")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.active()
        if self.value() == "no":
            return queryset.exclude(pk__in=ApiKey.objects.active().values("pk"))
        return queryset


class FeatureSelect(forms.Select):
    """The feature dropdown, each option tagged with its team so the page can show only the
    chosen team's features (static/gateway/apikey_form.js); the model's clean() refuses a
    feature of another team whatever the browser sends."""

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        instance = getattr(value, "instance", None)
        if instance is not None:
            option["attrs"]["data-team"] = str(instance.team_id)
        return option


def revoke(keys: QuerySet) -> tuple[list[ApiKey], list[ApiKey]]:
    """Revoke the keys that are not revoked yet: (revoked now, were already revoked)."""
    chosen = list(keys.select_related("team"))
    fresh = [k for k in chosen if k.revoked_at is None]
    already = [k for k in chosen if k.revoked_at is not None]
    if fresh:
        ApiKey.objects.filter(pk__in=[k.pk for k in fresh], revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        # Every process refuses them as soon as the version's message reaches it.
        configversion.changed(*(f"k:{k.pk}" for k in fresh))
    return fresh, already


def _names(keys: list[ApiKey]) -> str:
    return ", ".join(f"{k.prefix}…" for k in keys)


@admin.register(ApiKey)
class ApiKeyAdmin(Labelled, admin.ModelAdmin):
    list_display = (
        "prefix_shown",
        "name",
        "team",
        "feature",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "active",
    )
    # Search boxes, not a list of every team and feature (adminfilters.AutocompleteFilter).
    list_filter = (ActiveKeyFilter, ("team", AutocompleteFilter), ("feature", AutocompleteFilter))
    search_fields = ("prefix", "name", "team__name", "feature__name")
    list_select_related = ("team", "feature__team")
    actions = ["revoke_keys"]
    key_fields = (
        "team",
        "feature",
        "name",
        "expires_at",
        "rpm_limit",
        "tpm_limit",
        "output_cap",
    )
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")

    @property
    def media(self):
        team = ApiKey._meta.get_field("team")
        form = forms.Media(js=["gateway/apikey_form.js"])
        return super().media + autocomplete_media(team, self.admin_site) + form

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None):
        return self.key_fields if obj is None else self.key_fields + self.readonly_fields

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "feature":
            features = Feature.objects.select_related("team")
            team = request.GET.get("team") if request.method == "GET" else None
            if team and team.isdigit():
                features = features.filter(team_id=int(team))  # opened from a team's page
            kwargs["queryset"] = features
            kwargs["widget"] = FeatureSelect
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="key", ordering="prefix")
    def prefix_shown(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…"

    @admin.display(boolean=True)
    def active(self, obj: ApiKey) -> bool:
        return obj.is_active

    # Revoking: from the list (an action) or from the key's own page (a button), both
    # confirmed first; a revoked key keeps its usage history, unlike a deleted one.

    @admin.action(description="Revoke selected keys…", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        if request.POST.get("confirmed") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Revoke API keys?",
                "keys": list(queryset.select_related("team", "feature__team")),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "bulk": True,
            }
            return TemplateResponse(request, "admin/gateway/apikey/revoke_confirm.html", context)
        fresh, already = revoke(queryset)
        self._report(request, fresh, already)
        return None

    def _report(self, request: HttpRequest, fresh: list[ApiKey], already: list[ApiKey]) -> None:
        if fresh:
            self.message_user(
                request,
                f"Revoked {len(fresh)} key(s): {_names(fresh)}. Callers using them now get 401.",
                messages.SUCCESS,
            )
        if already:
            self.message_user(
                request,
                f"Already revoked, nothing changed: {_names(already)}.",
                messages.WARNING,
            )

    def get_urls(self):
        return [
            path(
                "<path:object_id>/revoke/",
                self.admin_site.admin_view(self.revoke_view),
                name="gateway_apikey_revoke",
            ),
            *super().get_urls(),
        ]

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the confirmation page; POST (with its CSRF token): revoke and go back."""
        key = self.get_object(request, unquote(object_id))
        if key is None:
            raise Http404("No such API key.")
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        if request.method == "POST":
            fresh, already = revoke(ApiKey.objects.filter(pk=key.pk))
            self._report(request, fresh, already)
            return HttpResponseRedirect(reverse("admin:gateway_apikey_change", args=[key.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Revoke this API key?",
            "keys": [key],
            "key": key,
            "bulk": False,
        }
        return TemplateResponse(request, "admin/gateway/apikey/revoke_confirm.html", context)

    def change_view(self, request: HttpRequest, object_id: str, form_url="", extra_context=None):
        key = self.get_object(request, unquote(object_id))
        extra_context = {**(extra_context or {}), "key": key}
        return super().change_view(request, object_id, form_url, extra_context)

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None):
        # The page after "Save" shows the secret; the other save buttons would skip it.
        extra_context = {
            **(extra_context or {}),
            "show_save_and_add_another": False,
            "show_save_and_continue": False,
        }
        return super().add_view(request, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if not change:
            obj.secret_shown_once = obj.set_new_secret()
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue=None
    ) -> HttpResponse:
        """Render the secret on this response instead of redirecting, so it is never put in
        a session, a message cookie or a URL; `no-store` keeps it out of the browser cache.
        Reloading this page asks to resubmit the form (which would create another key)."""
        base_url = request.build_absolute_uri("/v1")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "key": obj,
            "secret": obj.secret_shown_once,
            "base_url": base_url,
            "curl": curl_line(base_url, obj),
            "title": "API key created",
        }
        response = TemplateResponse(request, "admin/gateway/apikey/created.html", context)
        add_never_cache_headers(response)
        return response


def curl_line(base_url: str, key: ApiKey) -> str:
    """A first request to paste in a shell: the key goes in an environment variable so it is
    not left in the shell's history with the command."""
    feature = "" if key.feature_id else ' -H "X-Gateway-Feature: <feature>"'
    body = '{"model": "auto", "messages": [{"role": "user", "content": "Hello"}]}'
    return (
        f'curl {base_url}/chat/completions -H "Authorization: Bearer $GATEWAY_API_KEY"'
        f"{feature} -H \"Content-Type: application/json\" -d '{body}'"
    )


@admin.register(Provider)
class ProviderAdmin(Labelled, admin.ModelAdmin):
    list_display = (
        "name",
        "kind",
        "base_url",
        "api_key_env",
        "key_is_set",
        "connect_timeout",
        "read_timeout",
        "enabled",
    )
    list_filter = ("kind", "enabled")
    search_fields = ("name", "base_url")
    readonly_fields = ("key_is_set",)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fields = (
        "name",
        "kind",
        "base_url",
        "api_key_env",
        "key_is_set",
        "connect_timeout",
        "read_timeout",
        "enabled",
        "options",
    )

    @admin.display(boolean=True, description="key set in environment (or its _FILE)")
    def key_is_set(self, obj: Provider) -> bool | None:
        """Whether this process sees the variable; never its value. None: no key needed."""
        if not obj.api_key_env:
            return None
        if not keyvars.is_allowed(obj.api_key_env):
            return False  # never read: the provider's calls fail (gateway/keyvars.py)
        return bool(keyvars.provider_secret(obj.api_key_env))


class NextPositionFormSet(forms.BaseInlineFormSet):
    """New rows start after the last saved position (1, 2, 3 ... in the order shown), not
    all at 0; the "Add another" row continues from the blank rows."""

    def get_form_kwargs(self, index):
        kwargs = super().get_form_kwargs(index)
        saved = [getattr(o, "position", 0) or 0 for o in self.get_queryset()]
        after = max(saved, default=-1) + 1
        extra = index - self.initial_form_count() if index is not None else self.extra
        if index is None or index >= self.initial_form_count():
            kwargs["initial"] = {**kwargs.get("initial", {}), "position": after + extra}
        return kwargs


class FallbackInline(Labelled, admin.TabularInline):
    model = Fallback
    fk_name = "model"
    formset = NextPositionFormSet
    fields = ("position", "target")
    extra = 1
    verbose_name = "fallback"
    verbose_name_plural = "Fallbacks (tried in order of position)"


@admin.register(LanguageModel)
class LanguageModelAdmin(FallbackWarnings, Labelled, admin.ModelAdmin):
    list_display = (
        "name",
        "provider",
        "upstream_id",
        "input_per_mtok",
        "output_per_mtok",
        "cached_input_per_mtok",
        "cache_write_per_mtok",
        "context_window",
        "max_output_tokens",
        "mode",
        "enabled",
    )
    list_filter = ("provider", "mode", "enabled")
    search_fields = ("name", "upstream_id")
    list_select_related = ("provider",)
    inlines = [FallbackInline]
    fieldsets = [
        (None, {"fields": ("name", "provider", "upstream_id", "mode", "dimensions", "enabled")}),
        (
            "Prices (USD per million tokens)",
            {
                "fields": (
                    "input_per_mtok",
                    "output_per_mtok",
                    "cached_input_per_mtok",
                    "cache_write_per_mtok",
                ),
                "description": "Leave input or output blank for an unpriced model: its calls are "
                "recorded as cost unknown, never as free.",
            },
        ),
        ("Limits", {"fields": ("context_window", "max_output_tokens")}),
        (
            "Parameters the provider cannot honour",
            {
                "fields": ("drop_params",),
                "description": "By default a request asking for a parameter this model's "
                "provider cannot honour (e.g. logprobs or seed on Claude) gets a 400 naming it, "
                "or the fallback chain skips this model. Parameters listed here are dropped on "
                "purpose instead. See docs/compatibility.md.",
            },
        ),
    ]


class RouteStepInline(Labelled, admin.TabularInline):
    model = RouteStep
    formset = NextPositionFormSet
    fields = ("position", "model")
    extra = 1
    verbose_name = "model in the chain"
    verbose_name_plural = "Models in the chain (tried in order of position)"


@admin.register(RouteRule)
class RouteRuleAdmin(FallbackWarnings, Labelled, admin.ModelAdmin):
    list_display = (
        "position",
        "name",
        "priority",
        "max_prompt_tokens",
        "max_output_tokens",
        "chain",
        "enabled",
    )
    list_display_links = ("name",)
    list_editable = ("position", "enabled")
    list_filter = ("priority", "enabled")
    search_fields = ("name",)
    inlines = [RouteStepInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("steps__model")

    @admin.display(description="chain")
    def chain(self, obj: RouteRule) -> str:
        return " → ".join(step.model.name for step in obj.steps.all())


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
