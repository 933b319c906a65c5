"""Providers, models with their fallbacks, and routing rules."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from gateway import keyvars
from gateway.admin.common import FallbackWarnings, Labelled
from gateway.models import (
    Fallback,
    LanguageModel,
    Provider,
    RouteRule,
    RouteStep,
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
