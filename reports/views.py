"""Report pages, their JSON twins and the spend CSV. Thin: read filters, call one selector."""

from __future__ import annotations

import csv
from collections.abc import Callable
from decimal import Decimal

from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import json_script

from reports import health, queries
from reports.access import allowed_team_ids, reader_required
from reports.filters import ReportFilters, filter_choices, parse_filters

SPEND_DIMENSIONS = tuple(queries.DIMENSIONS)


class ReportJSONEncoder(DjangoJSONEncoder):
    """Decimals as plain fixed-point strings ("0.0000000000", never "0E-10")."""

    def default(self, o):
        if isinstance(o, Decimal):
            return format(o, "f")
        return super().default(o)


def _spend(f: ReportFilters, request: HttpRequest) -> dict:
    by = request.GET.get("by", "team")
    return queries.spend(f, by=by if by in SPEND_DIMENSIONS else "team")


# page slug -> (title, selector)
PAGES: dict[str, tuple[str, Callable[[ReportFilters, HttpRequest], dict]]] = {
    "overview": ("Overview", lambda f, r: queries.overview(f)),
    "spend": ("Spend over time", _spend),
    "cache": ("Cache", lambda f, r: health.cache(f)),
    "providers": ("Providers", lambda f, r: health.providers(f)),
    "models": ("Model mix", lambda f, r: queries.model_mix(f)),
}


def _report(request: HttpRequest, page: str) -> tuple[ReportFilters, dict]:
    if page not in PAGES:
        raise Http404("No such report")
    allowed = allowed_team_ids(request.user)
    filters = parse_filters(request.GET, allowed=allowed)
    return filters, PAGES[page][1](filters, request)


@reader_required(api=False)
def page(request: HttpRequest, page: str = "overview") -> HttpResponse:
    if page in PAGES and allowed_team_ids(request.user) == frozenset():
        # Least privilege: a reader given no team sees no figure, and is told why.
        nav = [(slug, title, reverse(f"reports:{slug}")) for slug, (title, _) in PAGES.items()]
        context = {"page": page, "title": PAGES[page][0], "nav": nav}
        return render(request, "reports/no_teams.html", context)
    filters, data = _report(request, page)
    context = {
        "page": page,
        "title": PAGES[page][0],
        "nav": [
            (slug, title, f"{reverse(f'reports:{slug}')}?{filters.querystring}")
            for slug, (title, _) in PAGES.items()
        ],
        "filters": filters,
        "choices": filter_choices(allowed_team_ids(request.user)),
        "ranges": ["24h", "48h", "7d", "30d", "90d", "custom"],
        "data": data,
        "data_json": json_script(data, "report-data", encoder=ReportJSONEncoder),
        "spend_dimensions": SPEND_DIMENSIONS,
    }
    return render(request, f"reports/{page}.html", context)


@reader_required(api=True)
def api(request: HttpRequest, page: str) -> JsonResponse:
    filters, data = _report(request, page)
    return JsonResponse({"filters": filters.as_dict(), **data}, encoder=ReportJSONEncoder)


@reader_required(api=False)
def spend_csv(request: HttpRequest) -> HttpResponse:
    filters, data = _report(request, "spend")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="spend-by-{data["by"]}.csv"'
    writer = csv.writer(response)
    writer.writerow(["bucket", data["by"], "requests", "input_tokens", "output_tokens", "cost_usd"])
    for row in data["rows"]:
        writer.writerow(
            [
                row["bucket"],
                row["name"],
                row["requests"],
                row["input_tokens"],
                row["output_tokens"],
                format(row["cost_usd"], "f"),
            ]
        )
    return response
