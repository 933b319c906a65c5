"""List filters and a paginator for admin lists over large tables (the usage ledger): they
never list every team, feature or key, never scan the table for its distinct values, and
never count more rows than a page needs to say "more than N".

- `AutocompleteFilter`: the sidebar shows one search box instead of every related record;
  typing asks the admin's own autocomplete view (select2, as `autocomplete_fields` use) for
  matching names, by the related admin's `search_fields`. Only the chosen record is read.
- `ChoicesFilter`: a text column filtered by values read from a small table (model names
  from the models, provider names from the providers) instead of a DISTINCT over the ledger.
- `CappedCountPaginator`: counts at most `COUNT_CAP` rows (a COUNT over a LIMIT subquery).
"""

from __future__ import annotations

from typing import cast

from django.contrib import admin
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.forms import Media
from django.utils.functional import cached_property

COUNT_CAP = 10_000


class AutocompleteFilter(admin.RelatedFieldListFilter):
    template = "admin/gateway/autocomplete_filter.html"

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        self.app_label = model._meta.app_label
        self.model_name = model._meta.model_name
        self.field_name = field.name
        # The other filters and the search, kept when this one is chosen or cleared.
        self.kept = [
            (name, value)
            for name, values in request.GET.lists()
            if name not in (self.lookup_kwarg, self.lookup_kwarg_isnull, "p")
            for value in values
        ]

    def field_choices(self, field, request, model_admin):
        """Only the chosen record (to show its name), never the whole table."""
        chosen = [v for v in (self.lookup_val or ()) if str(v).isdigit()]
        if not chosen:
            return []
        rows = field.related_model._default_manager.filter(pk__in=chosen)
        if any(f.name == "team" for f in field.related_model._meta.fields):
            rows = rows.select_related("team")  # features and keys are shown with their team
        return [(row.pk, str(row)) for row in rows]

    def has_output(self) -> bool:
        return True


class KeyAutocompleteFilter(AutocompleteFilter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = "API key"


def autocomplete_media(field, admin_site) -> Media:
    """What an `AutocompleteFilter` needs on the page: the admin's select2 and our script."""
    widget = AutocompleteSelect(field, admin_site).media
    # After the admin's jQuery (django.jQuery) and select2 in the merged order: listed after
    # them in one list, not merged as a separate one.
    # `_css`/`_js`: Media's own lists (Django has no public reader of them).
    css, js = widget._css, widget._js  # type: ignore[attr-defined]
    return Media(css=css, js=[*js, "gateway/autocomplete_filter.js"])


class ChoicesFilter(admin.SimpleListFilter):
    """Filter `parameter_name` (a text column) by the values `values()` returns."""

    def values(self) -> list[str]:
        raise NotImplementedError

    def lookups(self, request, model_admin):
        return [(v, v) for v in self.values()]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(**{str(self.parameter_name): value}) if value else queryset


class ServedModelFilter(ChoicesFilter):
    title = "served model"
    parameter_name = "served_model"

    def values(self) -> list[str]:
        from gateway.models import LanguageModel

        return list(LanguageModel.objects.order_by("name").values_list("name", flat=True))


class ProviderFilter(ChoicesFilter):
    title = "provider"
    parameter_name = "provider"

    def values(self) -> list[str]:
        from gateway.models import Provider

        return list(Provider.objects.order_by("name").values_list("name", flat=True))


class EndpointFilter(ChoicesFilter):
    """The API operations, from their list: not a DISTINCT over the whole ledger."""

    title = "endpoint"
    parameter_name = "endpoint"

    def values(self) -> list[str]:
        from gateway.models import ENDPOINTS

        return list(ENDPOINTS)


class CappedCountPaginator(Paginator):
    """A COUNT(*) of a 100-million-row ledger on every page is seconds; this one stops at
    `COUNT_CAP` + 1 rows (the page links then reach the first `COUNT_CAP` rows: filters and
    the date narrow the rest). templates/admin/gateway/usagerecord/pagination.html says
    "more than" when the cap is reached."""

    @property
    def count_cap(self) -> int:
        return COUNT_CAP

    @cached_property
    def count(self) -> int:
        rows = cast(QuerySet, self.object_list)  # the admin's changelist: a QuerySet
        return rows.order_by()[: COUNT_CAP + 1].count()
