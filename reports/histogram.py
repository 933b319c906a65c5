"""Percentiles estimated from the fixed latency buckets of the rollups."""

from __future__ import annotations

from reports.models import LATENCY_BOUNDS_MS


def percentile(counts: list[int], q: float) -> float | None:
    """The q-quantile (0 < q < 1) in ms, interpolated linearly inside its bucket.

    The error is at most one bucket's width; the open last bucket answers with its lower
    bound (a p95 above 30 s is reported as 30 s). None when there is no sample.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(LATENCY_BOUNDS_MS):
                return float(LATENCY_BOUNDS_MS[-1])
            lower = LATENCY_BOUNDS_MS[i - 1] if i else 0
            upper = LATENCY_BOUNDS_MS[i]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])
