"""Prometheus metrics: what the gateway served, per team, feature, model and provider.

`observe(entry)` is called once per request with the ledger entry `records.ledger_entry()`
builds, so the metrics count exactly what the ledger counts. It only bumps in-memory
counters (a few label lookups, microseconds). The ledger stays the record of money: cost
here is a float counter in USD (Prometheus's base-unit convention; every sample is a float64
anyway), good for rates and dashboards, never for billing.

Multi-process: uvicorn's `--workers N` runs N processes, each with its own counters. When
PROMETHEUS_MULTIPROC_DIR is set (to an empty directory, wiped before the server starts),
prometheus_client keeps every process's values in memory-mapped files there and `/metrics`
sums them; without it the in-process registry is exposed (one worker, the tests).

Circuit-breaker state is not a counter: it lives in Redis, shared by every instance, and is
read at scrape time (`circuit_exposition`) so every instance reports the same truth.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from gateway.process import state

__all__ = ["CONTENT_TYPE", "circuit_exposition", "exposition", "observe"]

LABELS = ("team", "feature", "model", "provider")
# LLM calls take from tens of milliseconds (cache hits) to minutes (long generations).
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, float("inf"))
CIRCUIT_STATES = {"closed": 0, "open": 1, "half_open": 2}


@dataclass(frozen=True, slots=True)
class Instruments:
    requests: Counter
    latency: Histogram
    tokens: Counter
    cost: Counter
    cache_hits: Counter
    fallbacks: Counter
    provider_failures: Counter
    budget_refusals: Counter


@cache
def instruments() -> Instruments:
    """The process's metrics, registered once (in the default registry; in multi-process mode
    prometheus_client backs their values with files instead)."""
    return Instruments(
        requests=Counter(
            "gateway_requests",
            "Requests answered, by outcome (status ok/error/refused) and cache (hit/miss/bypass).",
            [*LABELS, "status", "cache"],
        ),
        latency=Histogram(
            "gateway_request_latency_seconds",
            "Time from receiving a request to its ledger record (whole answer for streams).",
            LABELS,
            buckets=LATENCY_BUCKETS,
        ),
        tokens=Counter(
            "gateway_tokens", "Tokens billed, by direction (input/output).", [*LABELS, "direction"]
        ),
        cost=Counter("gateway_cost_usd", "Cost in USD (approximate; the ledger is exact).", LABELS),
        cache_hits=Counter("gateway_cache_hits", "Answers served from the response cache.", LABELS),
        fallbacks=Counter(
            "gateway_fallbacks",
            "Extra attempts a request needed before it was served or failed.",
            LABELS,
        ),
        provider_failures=Counter(
            "gateway_provider_failures",
            "Failed or skipped provider attempts (errors, timeouts, open circuits).",
            ["provider"],
        ),
        budget_refusals=Counter(
            "gateway_budget_refusals",
            "Requests refused because a hard budget would be exceeded.",
            ["team", "feature"],
        ),
    )


def _usd(value: Any) -> float:
    try:
        return float(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return 0.0


def _child(metric, *values: str):
    """The metric's child for these label values, as `metric.labels(...)` returns it: that
    call checks and converts the values and takes a lock every time (about half of observe's
    ~22 us), so the children are kept in the process state (gateway/process.py). Bounded like
    prometheus_client's own children, by the label values that occur."""
    key = (metric, values)
    children = state().metric_children
    child = children.get(key)
    if child is None:
        child = children[key] = metric.labels(*values)
    return child


def observe(
    entry: dict[str, Any], *, team_name: str | None = None, feature_name: str | None = None
) -> None:
    """Count one request from its ledger entry (see `gateway.records.record`)."""
    m = instruments()
    team = team_name or str(entry.get("team_id") or "")
    feature = feature_name or (str(entry["feature_id"]) if entry.get("feature_id") else "")
    labels = (team, feature, entry.get("served_model") or "", entry.get("provider") or "")
    cache_status = entry.get("cache") or "bypass"
    _child(m.requests, *labels, entry.get("status") or "", cache_status).inc()
    _child(m.latency, *labels).observe((entry.get("latency_ms") or 0) / 1000)
    if entry.get("input_tokens"):
        _child(m.tokens, *labels, "input").inc(entry["input_tokens"])
    if entry.get("output_tokens"):
        _child(m.tokens, *labels, "output").inc(entry["output_tokens"])
    cost = _usd(entry.get("cost_usd") or 0)
    if cost > 0:
        _child(m.cost, *labels).inc(cost)
    if cache_status == "hit":
        _child(m.cache_hits, *labels).inc()
    attempts = entry.get("attempts") or 0
    if attempts > 1:
        _child(m.fallbacks, *labels).inc(attempts - 1)
    for attempt in entry.get("attempt_log") or ():
        if attempt.get("error"):
            _child(m.provider_failures, attempt.get("provider") or "").inc()
    if entry.get("error_type") == "budget_exceeded":
        _child(m.budget_refusals, team, feature).inc()


def exposition() -> bytes:
    """Every counter of this process, or of all processes in multi-process mode."""
    instruments()  # registered even before the first request, so a scrape shows the names
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def circuit_exposition(*, redis, providers: list[str]) -> bytes:
    """The circuit state of each provider as it is in Redis now (0 closed, 1 open, 2 half
    open: cooldown over, waiting for a probe). Read-only: it never claims the probe.

    Built as metric families at scrape time, never as `Gauge` objects: in multi-process mode
    prometheus_client backs every Gauge with a per-process file, which the multi-process
    collector would expose a second time (stale, with its own `# TYPE` line), and Prometheus
    rejects a scrape that names a metric twice."""
    from gateway import circuit

    state = GaugeMetricFamily(
        "gateway_circuit_state",
        "Circuit breaker per provider: 0 closed, 1 open, 2 half open.",
        labels=["provider"],
    )
    failures = GaugeMetricFamily(
        "gateway_circuit_consecutive_failures",
        "Consecutive failures counted against a closed circuit.",
        labels=["provider"],
    )
    now_ms = int(time.time() * 1000)
    for name in providers:
        open_until, fails = await redis.hmget(circuit.PREFIX + name, "open_until", "fails")
        until = int(open_until or 0)
        current = "closed" if until == 0 else ("open" if now_ms < until else "half_open")
        state.add_metric([name], CIRCUIT_STATES[current])
        failures.add_metric([name], int(fails or 0))
    registry = CollectorRegistry()
    registry.register(_Families([state, failures]))
    return generate_latest(registry)


async def ledger_exposition(*, redis) -> bytes:
    """The ledger's dead letters (records the database refused, see gateway/ledger.py), as
    counted in Redis by whoever set them aside or replayed them: the same for every
    instance, read at scrape time like the circuit state."""
    from prometheus_client.core import CounterMetricFamily

    from gateway import ledger

    waiting, total = await redis.mget(ledger.DEAD_COUNT_KEY, ledger.DEAD_TOTAL_KEY)
    letters = GaugeMetricFamily(
        "gateway_ledger_dead_letters",
        "Ledger records the database refused, set aside and not yet replayed or purged.",
    )
    letters.add_metric([], int(waiting or 0))
    set_aside = CounterMetricFamily(
        "gateway_ledger_dead_letters_set_aside",
        "Ledger records ever set aside as dead letters.",
    )
    set_aside.add_metric([], int(total or 0))
    registry = CollectorRegistry()
    registry.register(_Families([letters, set_aside]))
    return generate_latest(registry)


class _Families:
    """A collector that yields metric families read once (see `circuit_exposition`)."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)
