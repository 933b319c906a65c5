"""Selectors for the cache and provider pages (hit rates, failure rates, latency percentiles,
circuit-breaker openings), from rollups only."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from django.db.models import Count, Sum
from django.db.models.functions import TruncDay, TruncHour

from reports.filters import ReportFilters
from reports.histogram import percentile
from reports.models import LATENCY_FIELDS, CircuitEvent
from reports.queries import (
    NO_FEATURE,
    bucket_label,
    bucket_starts,
    by_bucket,
    dimension_names,
    normalise,
    rate,
    rollups,
    usd,
)
from reports.savings import savings_by

_LATENCY_SUMS = {name: Sum(name) for name in LATENCY_FIELDS}


def cache(f: ReportFilters) -> dict:
    """Hit rate per bucket overall and per feature, and the dollars the cache saved."""
    starts = bucket_starts(f)
    index = {b: i for i, b in enumerate(starts)}
    overall = [[0, 0, 0] for _ in starts]  # requests, hits, saved units
    features: dict[str, list[list[int]]] = defaultdict(lambda: [[0, 0] for _ in starts])
    names = dimension_names("feature")
    rows = (
        by_bucket(rollups(f), f)
        .values("bucket", "feature_key")
        .annotate(requests=Sum("requests"), hits=Sum("cache_hits"))
    )
    # Each hit priced at the baseline (reports/savings.py), as on every page.
    for key, saved in savings_by(rollups(f), ["bucket"]).items():
        i = index.get(normalise(key[0]))
        if i is not None:
            overall[i][2] += saved.baseline_hits
    for row in rows:
        i = index.get(normalise(row["bucket"]))
        if i is None:
            continue
        cells = (overall[i], features[names.get(row["feature_key"], NO_FEATURE)][i])
        for cell in cells:
            cell[0] += row["requests"] or 0
            cell[1] += row["hits"] or 0
    per_feature = []
    for name in sorted(features):
        cells = features[name]
        requests, hits = sum(c[0] for c in cells), sum(c[1] for c in cells)
        per_feature.append(
            {
                "feature": name,
                "requests": requests,
                "hits": hits,
                "hit_rate": rate(hits, requests),
                "series": [rate(c[1], c[0]) for c in cells],
            }
        )
    requests, hits = sum(c[0] for c in overall), sum(c[1] for c in overall)
    return {
        "labels": [bucket_label(b, f) for b in starts],
        "hit_rate": [rate(c[1], c[0]) for c in overall],
        "saved_usd": [usd(c[2]) for c in overall],
        "features": per_feature,
        "requests": requests,
        "hits": hits,
        "overall_hit_rate": rate(hits, requests),
        "total_saved_usd": usd(sum(c[2] for c in overall)),
    }


def _health(row: dict) -> dict:
    calls = row["calls"] or 0
    counts = [row[name] or 0 for name in LATENCY_FIELDS]
    failures = (row["errors"] or 0) + (row["stream_errors"] or 0)
    return {
        "calls": calls,
        "success_rate": rate(calls - failures, calls),
        "fallback_rate": rate(row["fallbacks"], calls),
        "error_rate": rate(failures, calls),
        "p50_ms": _round(percentile(counts, 0.50)),
        "p95_ms": _round(percentile(counts, 0.95)),
        "mean_ms": _round(row["latency_sum"] / calls if calls else None),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _openings_over_time(events, f: ReportFilters, index: dict) -> list[dict]:
    trunc = TruncHour if f.hourly else TruncDay
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * len(index))
    rows = (
        events.order_by()
        .annotate(bucket=trunc("opened_at", tzinfo=dt.UTC))
        .values_list("bucket", "provider")
        .annotate(n=Count("id"))
    )
    for bucket, provider, n in rows:
        i = index.get(normalise(bucket))
        if i is not None:
            counts[provider][i] += n
    return [{"provider": name, "counts": counts[name]} for name in sorted(counts)]


def providers(f: ReportFilters) -> dict:
    """Per provider and model: success, fallback and error rates, p50/p95; per provider over
    time: error rate and p95; and circuit-breaker openings in the range.

    Rates count calls that reached a provider (cache hits and refusals never do).
    """
    sums = dict(
        calls=Sum("latency_count"),
        errors=Sum("errors"),
        stream_errors=Sum("stream_errors"),
        fallbacks=Sum("fallbacks"),
        latency_sum=Sum("latency_ms_sum"),
        **_LATENCY_SUMS,
    )
    events = CircuitEvent.objects.filter(opened_at__gte=f.start, opened_at__lt=f.end)
    openings = dict(events.order_by().values_list("provider").annotate(n=Count("id")))
    called = rollups(f).exclude(provider="")
    table = [
        {
            "provider": row["provider"],
            "model": row["served_model"],
            **_health(row),
            "circuit_openings": openings.get(row["provider"], 0),
        }
        for row in called.values("provider", "served_model")
        .annotate(**sums)
        .order_by("provider", "served_model")
        if row["calls"]
    ]
    starts = bucket_starts(f)
    index = {b: i for i, b in enumerate(starts)}
    series: dict[str, list[dict | None]] = defaultdict(lambda: [None] * len(starts))
    for row in by_bucket(called, f).values("bucket", "provider").annotate(**sums):
        i = index.get(normalise(row["bucket"]))
        if i is not None and row["calls"]:
            series[row["provider"]][i] = _health(row)
    return {
        "labels": [bucket_label(b, f) for b in starts],
        "table": table,
        "openings_over_time": _openings_over_time(events, f, index),
        "series": [
            {
                "provider": name,
                "error_rate": [p and p["error_rate"] for p in points],
                "p95_ms": [p and p["p95_ms"] for p in points],
                "circuit_openings": openings.get(name, 0),
            }
            for name, points in sorted(series.items())
        ],
        "circuit_events": [
            {
                "provider": e.provider,
                "model": e.model,
                "kind": e.kind,
                "opened_at": e.opened_at,
                "reason": e.reason,
            }
            for e in events[:50]
        ],
        "circuit_openings": openings,
    }
