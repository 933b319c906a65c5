"""What every admin page shares: labels in words, and the fallback price warnings."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest

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
