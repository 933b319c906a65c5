"""The ledger's tables: one `UsageRecord` per request, and the `DeadLetter`s the database
refused. Registered through gateway.models, which imports them (and from which callers import
them)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import models

from gateway.models import ApiKey, Feature, Team


class UsageRecordQuerySet(models.QuerySet):
    def for_team(self, team: Team | int) -> UsageRecordQuerySet:
        return self.filter(team=team)

    def between(self, start, end) -> UsageRecordQuerySet:
        return self.filter(created_at__gte=start, created_at__lt=end)


COST_FIELD: dict[str, Any] = {"max_digits": 20, "decimal_places": 10, "default": Decimal("0")}


# The API operations the ledger records (UsageRecord.endpoint; gateway/operations/ and the
# inbound formats), as the admin's and the dashboards' filters offer them.
ENDPOINTS = ("chat.completions", "embeddings", "messages", "responses")


class UsageRecord(models.Model):
    """One row per request (the ledger, and the truth budgets are rebuilt from)."""

    class Status(models.TextChoices):
        OK = "ok", "ok"
        ERROR = "error", "error"
        REFUSED = "refused", "refused (budget, rate limit)"
        STREAM_ERROR = "stream_error", "stream failed after first byte"
        LOST = "lost", "lost (the serving process died; estimated, see docs/operations.md)"

    class Cache(models.TextChoices):
        HIT = "hit", "hit"
        MISS = "miss", "miss"
        BYPASS = "bypass", "bypass"

    # Unique with created_at (Meta), not alone: a partitioned table's unique keys must hold
    # its partition key (gateway/partitions.py). The drain skips a request id already in.
    request_id = models.CharField(max_length=40)
    created_at = models.DateTimeField(db_index=True)
    # Indexed by the (team, created_at) and (feature, created_at) indexes, not on their own.
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="usage", db_index=False)
    feature = models.ForeignKey(
        Feature,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="usage",
        db_index=False,
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    requested_model = models.CharField(max_length=128, blank=True)
    served_model = models.CharField(max_length=128, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True)
    endpoint = models.CharField(
        max_length=32,
        default="chat.completions",
        help_text="The API operation called: chat.completions, embeddings...",
    )
    stream = models.BooleanField(default=False)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(
        default=0, help_text="Input tokens read from the prompt cache."
    )
    cache_write_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(**COST_FIELD)
    saved_usd = models.DecimalField(**COST_FIELD, help_text="What a cache hit would have cost.")
    reserved_usd = models.DecimalField(
        **COST_FIELD,
        help_text="Lost requests only: the worst case held at admission (cost_usd is the "
        "estimated delivered cost, which is what was billed).",
    )
    estimated = models.BooleanField(
        default=False, help_text="Tokens estimated: the provider reported no usage."
    )
    unpriced = models.BooleanField(
        default=False, help_text="The model has no price: cost unknown, not zero."
    )
    latency_ms = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status, default=Status.OK)
    http_status = models.PositiveSmallIntegerField(default=200)
    error_type = models.CharField(max_length=64, blank=True)
    cache = models.CharField(max_length=8, choices=Cache, default=Cache.MISS)
    content = models.JSONField(
        null=True, blank=True, help_text="Only for teams that opt in; redacted."
    )
    output_cap = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The output cap the gateway sent upstream (the request sent no max_tokens).",
    )
    refusal = models.JSONField(
        null=True,
        blank=True,
        help_text="For a budget refusal: the budget, window, spent, reserved by requests in "
        "flight, limit, and what this request needed (USD).",
    )

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["team", "created_at"]),
            models.Index(fields=["feature", "created_at"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["request_id", "created_at"], name="gateway_usagerecord_request_once"
            )
        ]

    def __str__(self) -> str:
        return self.request_id


class DeadLetter(models.Model):
    """A ledger record the database refused (a NUL byte, a number out of range, a deleted
    team...), set aside so that it never blocks the records behind it. `raw` is the record
    exactly as it was queued (JSON; a NUL byte stays escaped as \\u0000). Replay it after a
    fix: the admin action or `manage.py deadletters --replay ID`."""

    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the raw record.")
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    team_id = models.BigIntegerField(null=True, blank=True)
    raw = models.TextField()
    error = models.TextField(blank=True)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now=True)
    attempts = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-last_seen"]
        verbose_name = "dead letter (refused ledger record)"
        verbose_name_plural = "dead letters (refused ledger records)"

    def __str__(self) -> str:
        return self.request_id or self.digest[:12]
