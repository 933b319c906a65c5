"""Selectors for the cache and provider pages (hit rates, failure rates, latency percentiles,
circuit-breaker openings), from rollups only."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDay, TruncHour

from reports.filters import ReportFilters
from reports.histogram import percentile
from reports.models import LATENCY_FIELDS, CircuitEvent
from reports.queries import (
    NO_FEATURE,
    bucket_label,
    bucket_starts,
    by_bucket,
    normalise,
    rate,
    rollups,
    series_names,
    usd,
)
from reports.savings import savings_and_sums

_LATENCY_SUMS = {name: Sum(name) for name in LATENCY_FIELDS}
# Features of the cache page, most requests first; the others are summed in one row.
FEATURES_SHOWN = 12
OTHERS = object()


def cache(f: ReportFilters) -> dict:
    """Hit rate per bucket overall and per feature, and the dollars the cache saved: the
    FEATURES_SHOWN features with most requests, and one row summing the others. Two reads
    of the range's rows, however many features."""
    starts = bucket_starts(f)
    index = {b: i for i, b in enumerate(starts)}
    ranked = sorted(
        rollups(f)
        .values("feature_key")
        .annotate(requests=Sum("requests"), hits=Sum("cache_hits"))
        .values_list("feature_key", "requests", "hits"),
        key=lambda r: (-(r[1] or 0), r[0]),
    )
    cut = FEATURES_SHOWN if len(ranked) > FEATURES_SHOWN + 1 else len(ranked)
    shown, hidden = [r[0] for r in ranked[:cut]], len(ranked) - cut
    also: dict[str, Any] = {"requests": Sum("requests"), "hits": Sum("cache_hits")}
    for j, key in enumerate(shown):
        also[f"requests_{j}"] = Sum("requests", filter=Q(feature_key=key))
        also[f"hits_{j}"] = Sum("cache_hits", filter=Q(feature_key=key))
    overall = [[0, 0, 0] for _ in starts]  # requests, hits, saved units
    cells = {key: [[0, 0] for _ in starts] for key in [*shown, OTHERS]}
    # Each hit priced at the baseline (reports/savings.py), as on every page.
    for (bucket,), (saved, sums) in savings_and_sums(rollups(f), ["bucket"], also).items():
        i = index.get(normalise(bucket))
        if i is None:
            continue
        overall[i][0] += sums["requests"]
        overall[i][1] += sums["hits"]
        overall[i][2] += saved.baseline_hits
        other = cells[OTHERS][i]
        other[0] += sums["requests"]
        other[1] += sums["hits"]
        for j, key in enumerate(shown):
            cells[key][i][0] += sums[f"requests_{j}"]
            cells[key][i][1] += sums[f"hits_{j}"]
            other[0] -= sums[f"requests_{j}"]
            other[1] -= sums[f"hits_{j}"]
    names = series_names("feature", shown)
    per_feature = [_hit_rates(names.get(key, NO_FEATURE), cells[key]) for key in shown]
    if hidden:
        per_feature.append(_hit_rates(f"{hidden:,} other features", cells[OTHERS]))
    requests, hits = sum(c[0] for c in overall), sum(c[1] for c in overall)
    return {
        "labels": [bucket_label(b, f) for b in starts],
        "hit_rate": [rate(c[1], c[0]) for c in overall],
        "saved_usd": [usd(c[2]) for c in overall],
        "features": per_feature,
        "other_features": hidden,
        "requests": requests,
        "hits": hits,
        "overall_hit_rate": rate(hits, requests),
        "total_saved_usd": usd(sum(c[2] for c in overall)),
    }


def _hit_rates(name: str, cells: list[list[int]]) -> dict:
    requests, hits = sum(c[0] for c in cells), sum(c[1] for c in cells)
    return {
        "feature": name,
        "requests": requests,
        "hits": hits,
        "hit_rate": rate(hits, requests),
        "series": [rate(c[1], c[0]) for c in cells],
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
    starts = bucket_starts(f)
    index = {b: i for i, b in enumerate(starts)}
    # One read of the range's rows, a row per bucket, provider and model: the table sums
    # them over buckets, the series over models.
    per_model: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    per_bucket: dict[str, list[Counter[str]]] = defaultdict(lambda: [Counter() for _ in starts])
    called = by_bucket(rollups(f).exclude(provider=""), f)
    for row in called.values("bucket", "provider", "served_model").annotate(**sums):
        figures = {name: row[name] or 0 for name in sums}
        per_model[(row["provider"], row["served_model"])].update(figures)
        i = index.get(normalise(row["bucket"]))
        if i is not None:
            per_bucket[row["provider"]][i].update(figures)
    table = [
        {
            "provider": provider,
            "model": model,
            **_health(row),
            "circuit_openings": openings.get(provider, 0),
        }
        for (provider, model), row in sorted(per_model.items())
        if row["calls"]
    ]
    series = {
        provider: [_health(row) if row["calls"] else None for row in points]
        for provider, points in per_bucket.items()
    }
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
