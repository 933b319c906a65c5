"""API keys: created with their secret shown once, revoked (never deleted by mistake)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from gateway import configversion
from gateway.admin.common import Labelled
from gateway.adminfilters import (
    AutocompleteFilter,
    autocomplete_media,
)
from gateway.models import (
    ApiKey,
    Feature,
)


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
