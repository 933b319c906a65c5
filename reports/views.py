"""Report pages, their JSON twins and the spend CSV. Thin: read filters, call one selector."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from urllib.parse import urlencode

from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import json_script

from gateway.csvexport import csv_writer
from gateway.pricehistory import PriceHistory
from reports import availability, candidate, health, incidents, month, monthly, queries, whatif
from reports.access import allowed_team_ids, reader_required
from reports.filters import (
    EARLIEST_DATE,
    MAX_NAME,
    RANGE_LABELS,
    FilterError,
    ReportFilters,
    filter_choices,
    names,
    parse_filters,
    since_window,
)
from reports.savings import baseline_label

SPEND_DIMENSIONS = tuple(queries.DIMENSIONS)


class ReportJSONEncoder(DjangoJSONEncoder):
    """Decimals as plain fixed-point strings ("0.0000000000", never "0E-10")."""

    def default(self, o):
        if isinstance(o, Decimal):
            return format(o, "f")
        return super().default(o)


def _spend(f: ReportFilters, request: HttpRequest) -> dict:
    by = request.GET.get("by", "").strip() or "team"
    if by not in SPEND_DIMENSIONS:
        shown = ", ".join(SPEND_DIMENSIONS)
        raise FilterError("by", f"by must be one of {shown}; got {by[:40]!r}.")
    return queries.spend(f, by=by)


# page slug -> (title, selector)
PAGES: dict[str, tuple[str, Callable[[ReportFilters, HttpRequest], dict]]] = {
    "overview": ("Overview", lambda f, r: {**queries.overview(f), **incidents.page(f)}),
    "spend": ("Spend over time", _spend),
    "cache": ("Cache", lambda f, r: health.cache(f)),
    "providers": ("Providers", lambda f, r: health.providers(f)),
    "models": ("Model mix", lambda f, r: queries.model_mix(f)),
    "availability": ("Availability", lambda f, r: availability.availability(f)),
    "incidents": ("Incidents", lambda f, r: incidents.page(f)),
}


def _report(request: HttpRequest, page: str) -> tuple[ReportFilters, dict]:
    if page not in PAGES:
        raise Http404("No such report")
    allowed = allowed_team_ids(request.user)
    filters = parse_filters(request.GET, allowed=allowed)
    return filters, PAGES[page][1](filters, request)


def nav_links(querystring: str = "") -> list[tuple[str, str, str]]:
    """The reports' pages (filters kept), then the what-if page."""
    suffix = f"?{querystring}" if querystring else ""
    links = [
        (slug, title, f"{reverse(f'reports:{slug}')}{suffix}") for slug, (title, _) in PAGES.items()
    ]
    return [
        *links,
        ("monthly", "Monthly report", reverse("reports:monthly")),
        ("whatif", "What-if", reverse("reports:whatif")),
    ]


def _bad_filter_page(request: HttpRequest, page: str, error: FilterError) -> HttpResponse:
    """A filter that cannot be applied: 400, with the message, in the reports' layout."""
    context = {
        "title": PAGES[page][0],
        "message": error.message,
        "nav": nav_links(),
        "reset_href": reverse(f"reports:{page}"),
    }
    return render(request, "reports/bad_filter.html", context, status=400)


def _bad_filter_json(error: FilterError) -> JsonResponse:
    body = {"message": error.message, "type": "invalid_request_error", "param": error.param}
    return JsonResponse({"error": body}, status=400)


@reader_required(api=False)
def page(request: HttpRequest, page: str = "overview") -> HttpResponse:
    if page in PAGES and allowed_team_ids(request.user) == frozenset():
        # Least privilege: a reader given no team sees no figure, and is told why.
        context = {"page": page, "title": PAGES[page][0], "nav": nav_links()}
        return render(request, "reports/no_teams.html", context)
    try:
        filters, data = _report(request, page)
    except FilterError as error:
        return _bad_filter_page(request, page, error)
    context = {
        "page": page,
        "title": PAGES[page][0],
        "nav": nav_links(filters.querystring),
        "filters": filters,
        "choices": filter_choices(allowed_team_ids(request.user)),
        "ranges": list(RANGE_LABELS.items()),
        "data": data,
        "data_json": json_script(data, "report-data", encoder=ReportJSONEncoder),
        "spend_dimensions": SPEND_DIMENSIONS,
        "refused_url": refused_records_url(request, filters),
        "baseline_text": baseline_label(PriceHistory.load(), filters.team_ids),
    }
    return render(request, f"reports/{page}.html", context)


def refused_records_url(request: HttpRequest, f: ReportFilters) -> str:
    """The admin's list of the refused requests the page counts (same range, teams and
    features), for readers who may see usage records there; "" for the others."""
    if not (request.user.is_staff and request.user.has_perm("gateway.view_usagerecord")):
        return ""
    params = {
        "status__exact": "refused",
        "created_at__gte": f.start.isoformat(),
        "created_at__lt": f.end.isoformat(),
    }
    if f.team_ids is not None:
        params["team__id__in"] = ",".join(str(i) for i in sorted(f.team_ids)) or "0"
    if f.feature_keys is not None:
        params["feature__id__in"] = ",".join(str(i) for i in sorted(f.feature_keys)) or "0"
    return f"{reverse('admin:gateway_usagerecord_changelist')}?{urlencode(params)}"


@reader_required(api=True)
def api(request: HttpRequest, page: str) -> JsonResponse:
    try:
        filters, data = _report(request, page)
    except FilterError as error:
        return _bad_filter_json(error)
    return JsonResponse({"filters": filters.as_dict(), **data}, encoder=ReportJSONEncoder)


@reader_required(api=False)
def spend_csv(request: HttpRequest) -> HttpResponse:
    try:
        filters, data = _report(request, "spend")
    except FilterError as error:
        return _bad_filter_page(request, "spend", error)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="spend-by-{data["by"]}.csv"'
    writer = csv_writer(response)  # cells that would start a formula are escaped
    # Every CSV has the team column (by team, it is the grouped column itself).
    named = [] if data["by"] == "team" else [data["by"]]
    writer.writerow(
        ["bucket", "team", *named, "requests", "input_tokens", "output_tokens", "cost_usd"]
    )
    for row in queries.spend_rows(filters, by=data["by"]):
        writer.writerow(
            [
                row["bucket"],
                row["team"],
                *([row["name"]] if named else []),
                row["requests"],
                row["input_tokens"],
                row["output_tokens"],
                format(row["cost_usd"], "f"),
            ]
        )
    return response


@reader_required(api=False)
def whatif_page(request: HttpRequest) -> HttpResponse:
    """A candidate policy (prefilled with the admin's routes) replayed over past traffic of
    the teams the reader may see."""
    allowed = allowed_team_ids(request.user)
    context = {"page": "whatif", "title": "What-if", "nav": nav_links()}
    if allowed == frozenset():
        return render(request, "reports/no_teams.html", context)
    text = request.POST.get("candidate") or candidate.current_policy_text()
    since = request.POST.get("since") or "30d"
    context.update(candidate_text=text, since=since, choices=candidate.SINCE_CHOICES)
    if request.method != "POST":
        return render(request, "reports/whatif.html", context)
    try:
        policy = candidate.candidate_from_text(text)
        start, end = since_window(since, timezone.now())
    except (candidate.CandidateError, FilterError) as error:
        context["error"] = str(error)
        return render(request, "reports/whatif.html", context, status=400)
    context["result"] = whatif.replay(start=start, end=end, team_ids=allowed, candidate=policy)
    return render(request, "reports/whatif.html", context)


def _monthly(
    request: HttpRequest, allowed: frozenset[int] | None, teams_shown: int | None = None
) -> tuple[dict, monthly.ReportMonth]:
    """The report of `?month=YYYY-MM` (default: the last complete month), for `?team=` or
    every team the reader may see, and its month. Raises FilterError."""
    period = monthly.parse_month(request.GET.get("month", ""), timezone.now())
    team = request.GET.get("team", "").strip()
    # One parser for team names (length, control characters) and the reader's scope.
    scoped = parse_filters(QueryDict(urlencode({"team": team})), allowed=allowed)
    return monthly.report(period, scoped.team_ids, team=team, teams_shown=teams_shown), period


def _monthly_query(key: str, team: str) -> str:
    return urlencode({k: v for k, v in {"month": key, "team": team}.items() if v})


@reader_required(api=False)
def monthly_page(request: HttpRequest) -> HttpResponse:
    """The one-page monthly report, printable, with its CSV and JSON exports."""
    context = {"page": "monthly", "title": "Monthly report", "nav": nav_links()}
    allowed = allowed_team_ids(request.user)
    if allowed == frozenset():
        return render(request, "reports/no_teams.html", context)
    try:
        data, period = _monthly(request, allowed, teams_shown=month.TABLE_TEAMS)
    except FilterError as error:
        context.update(message=error.message, reset_href=reverse("reports:monthly"))
        return render(request, "reports/bad_filter.html", context, status=400)
    following = period.following()
    current = monthly.month_of(timezone.now())
    context.update(
        data=data,
        rows=data["features"],
        other=data["other"],
        teams=filter_choices(allowed)["teams"],
        query=_monthly_query(data["month"], data["team"]),
        previous=period.previous().key,
        previous_query=_monthly_query(period.previous().key, data["team"]),
        next=following.key if following.start <= current.start else "",
        next_query=_monthly_query(following.key, data["team"]),
        earliest=f"{EARLIEST_DATE:%Y-%m}",
        latest=current.key,
        details_query=urlencode(
            {
                "range": "custom",
                "start": data["start"].isoformat(),
                "end": data["end"].isoformat(),
                **({"team": data["team"]} if data["team"] else {}),
            }
        ),
        baseline_text=data["baseline"],
    )
    return render(request, "reports/monthly.html", context)


@reader_required(api=True)
def monthly_json(request: HttpRequest) -> JsonResponse:
    try:
        data, _ = _monthly(request, allowed_team_ids(request.user))
    except FilterError as error:
        return _bad_filter_json(error)
    return JsonResponse(data, encoder=ReportJSONEncoder)


@reader_required(api=False)
def monthly_csv(request: HttpRequest) -> HttpResponse:
    try:
        data, _ = _monthly(request, allowed_team_ids(request.user))
    except FilterError as error:
        context = {"title": "Monthly report", "message": error.message, "nav": nav_links()}
        context["reset_href"] = reverse("reports:monthly")
        return render(request, "reports/bad_filter.html", context, status=400)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    # The team name is the reader's text: only safe characters reach the header.
    suffix = re.sub(r"[^A-Za-z0-9_.-]", "_", f"-{data['team']}") if data["team"] else ""
    response["Content-Disposition"] = (
        f'attachment; filename="gateway-report-{data["month"]}{suffix}.csv"'
    )
    monthly.write_csv(data, response)
    return response


@reader_required(api=True)
def name_suggestions(request: HttpRequest) -> JsonResponse:
    """`?kind=team|feature&q=...`: the names the filter boxes suggest as the reader types."""
    kind, query = request.GET.get("kind", ""), request.GET.get("q", "").strip()
    if kind not in ("team", "feature"):
        return _bad_filter_json(FilterError("kind", "kind must be team or feature."))
    if len(query) > 2 * MAX_NAME + 1 or any(not ch.isprintable() for ch in query):
        return _bad_filter_json(FilterError("q", "q must be printable text of a name's length."))
    return JsonResponse({"names": names(kind, query, allowed_team_ids(request.user))})
