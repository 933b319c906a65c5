"""Learning each feature's output cap from its own ledger (the learn-output-caps task).

A request that sends no max_tokens is capped (gateway/services.py `output_limits`): the cap is
sent upstream and is what its budget reservation holds. The learned cap is the
GATEWAY["OUTPUT_CAP_PERCENTILE"] (99.9) percentile of the output tokens of the feature's
served answers over the last GATEWAY["OUTPUT_CAP_WINDOW_DAYS"] (7) days, never below
GATEWAY["OUTPUT_CAP_FLOOR"] (1024) nor above the largest max output of the enabled models.

A ledger of capped answers cannot show what the answers would have been without the cap, so
a percentile alone would never let a cap grow. When more answers than the percentile allows
(0.1 %) ended at the cap they were sent with, the cap doubles instead.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import F, Max
from django.utils import timezone

from gateway import configversion
from gateway.models import Feature, LanguageModel, UsageRecord

log = logging.getLogger(__name__)


def learn_all(now=None) -> dict[int, int | None]:
    """Learn and store every feature's cap; returns {feature id: learned cap or None}."""
    now = now or timezone.now()
    ceiling = LanguageModel.objects.filter(enabled=True).aggregate(m=Max("max_output_tokens"))["m"]
    learned = {}
    for feature in Feature.objects.all():
        cap = learn(feature, now=now, ceiling=ceiling)
        learned[feature.id] = cap
        Feature.objects.filter(pk=feature.pk).update(
            learned_output_cap=cap, learned_output_cap_at=now
        )
    if learned:
        configversion.changed("t:*")  # the caps are in every team's features
    return learned


def learn(feature: Feature, *, now, ceiling: int | None) -> int | None:
    """The feature's learned cap, or None when its window holds too few answers."""
    g = settings.GATEWAY
    since = now - timedelta(days=int(g["OUTPUT_CAP_WINDOW_DAYS"]))
    answers = UsageRecord.objects.filter(
        feature=feature, created_at__gte=since, created_at__lt=now, status=UsageRecord.Status.OK
    ).exclude(cache=UsageRecord.Cache.HIT)
    total = answers.count()
    if total < max(1, int(g["OUTPUT_CAP_MIN_SAMPLES"])):
        return None
    # Answers allowed above the percentile (2 of 2,000 for the 99.9th), in exact decimals.
    share_above = (100 - Decimal(str(g["OUTPUT_CAP_PERCENTILE"]))) / 100
    above = math.floor(total * share_above)
    value = answers.order_by("-output_tokens").values_list("output_tokens", flat=True)[above] or 0
    capped = answers.filter(output_cap__isnull=False, output_tokens__gte=F("output_cap"))
    if capped.count() > above:
        largest = capped.aggregate(m=Max("output_cap"))["m"] or 0
        value = max(value, 2 * largest)
    cap = max(value, int(g["OUTPUT_CAP_FLOOR"]))
    if ceiling:
        cap = min(cap, ceiling)
    log.info("feature %s: learned output cap %s from %s answers", feature, cap, total)
    return cap


def effective_cap(feature: Feature) -> int:
    """What a request of this feature without max_tokens is capped at (before the model's
    own max output): the admin's cap, else the learned one, else the default."""
    return (
        feature.output_cap
        or feature.learned_output_cap
        or int(settings.GATEWAY["OUTPUT_CAP_DEFAULT"])
    )
