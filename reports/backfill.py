"""SYNTHETIC HISTORY for the demo only: ledger rows invented for past days so that charts
over 30 or 90 days are not empty on a fresh install. They never pass through the gateway;
their request ids start with "synthetic-" so they can be told apart (and deleted).
Costs are computed with the models' prices through gateway.money, like real rows.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from gateway.models import Feature, LanguageModel, UsageRecord
from gateway.money import Prices, cost_of
from gateway.providers.base import Usage
from reports import rollups
from reports.demo import FEATURES, RUNAWAY_FEATURE

SYNTHETIC_PREFIX = "synthetic-"
# What `auto` resolves to per priority in the demo configuration's routes.
AUTO_BY_PRIORITY = {"low": "llama-3.1-8b", "medium": "gpt-4o-mini", "high": "claude-sonnet-4"}
HOURLY_SHAPE = [1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 9, 8, 9, 10, 10, 9, 7, 5, 4, 3, 2, 2, 1]


def _prices(model: LanguageModel) -> Prices:
    return Prices(
        model.input_per_mtok,
        model.output_per_mtok,
        model.cached_input_per_mtok,
        model.cache_write_per_mtok,
    )


def _record(rng: random.Random, feature: Feature, at: dt.datetime, models: dict) -> UsageRecord:
    traffic = next((t for t in FEATURES if t.name == feature.name), FEATURES[0])
    name = AUTO_BY_PRIORITY[traffic.priority] if traffic.model == "auto" else traffic.model
    model = models.get(name) or next(iter(models.values()))
    usage = Usage(rng.randint(40, 1500), rng.randint(5, traffic.max_tokens or 300))
    cost = cost_of(usage, _prices(model)).usd
    hit = feature.default_cache_ttl > 0 and rng.random() < traffic.repeat_share * 0.6
    failed = not hit and rng.random() < 0.015
    return UsageRecord(
        request_id=f"{SYNTHETIC_PREFIX}{uuid.uuid4().hex[:24]}",
        created_at=at,
        team_id=feature.team_id,
        feature=feature,
        requested_model=traffic.model,
        served_model=model.name,
        provider=model.provider.name,
        attempts=2 if (failed or rng.random() < 0.02) else 1,
        input_tokens=0 if failed else usage.input_tokens,
        output_tokens=0 if failed else usage.output_tokens,
        cost_usd=Decimal(0) if (hit or failed) else cost,
        saved_usd=cost if hit else Decimal(0),
        latency_ms=rng.randint(2, 15) if hit else int(rng.lognormvariate(6.2, 0.5)),
        status=UsageRecord.Status.ERROR if failed else UsageRecord.Status.OK,
        http_status=503 if failed else 200,
        cache=UsageRecord.Cache.HIT if hit else UsageRecord.Cache.MISS,
    )


def backfill(*, days: int, per_day: int = 400, seed: int = 11) -> int:
    """Write `days` days of synthetic history ending an hour ago; returns rows written."""
    rng = random.Random(seed)
    # The runaway loop is today's incident, not a habit: it gets no invented history.
    features = list(Feature.objects.exclude(name=RUNAWAY_FEATURE).select_related("team"))
    models = {m.name: m for m in LanguageModel.objects.select_related("provider") if m.is_priced}
    if not features or not models:
        return 0
    end = rollups.floor_hour(timezone.now()) - dt.timedelta(hours=1)
    start = end - dt.timedelta(days=days)
    records: list[UsageRecord] = []
    hour = start
    while hour < end:
        weekday = 0.5 if hour.weekday() >= 5 else 1.0
        mean = per_day * weekday * HOURLY_SHAPE[hour.hour] / sum(HOURLY_SHAPE)
        for _ in range(round(mean * rng.uniform(0.7, 1.3))):
            at = hour + dt.timedelta(seconds=rng.randrange(3600))
            records.append(_record(rng, rng.choice(features), at, models))
        hour += dt.timedelta(hours=1)
    with transaction.atomic():
        UsageRecord.objects.bulk_create(records, batch_size=2000)
    rollups.rebuild(start, end)
    return len(records)
