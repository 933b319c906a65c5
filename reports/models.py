"""Hourly rollups of the ledger (what every report page reads), circuit-breaker openings and
which teams a manager may see."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from gateway.models import Team

# Upper bounds (ms, inclusive) of the latency histogram buckets; the last bucket is open-ended.
# Fixed buckets make rollups additive: p50/p95 are estimated by interpolating inside a bucket.
LATENCY_BOUNDS_MS: tuple[int, ...] = (
    25,
    50,
    100,
    150,
    200,
    300,
    400,
    500,
    750,
    1000,
    1500,
    2000,
    3000,
    5000,
    10000,
    30000,
)
LATENCY_FIELDS: tuple[str, ...] = tuple(f"lat_b{i}" for i in range(len(LATENCY_BOUNDS_MS) + 1))

# Every additive column of a rollup, in the order `rollups` writes them.
COUNTER_FIELDS: tuple[str, ...] = (
    "requests",
    "cache_hits",
    "errors",
    "refused",
    "stream_errors",
    "lost",
    "fallbacks",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_units",
    "saved_units",
    "billed_input_tokens",
    "billed_output_tokens",
    "billed_cached_tokens",
    "billed_cache_write_tokens",
    "hit_input_tokens",
    "hit_output_tokens",
    "hit_cached_tokens",
    "fallback_extra_units",
    "latency_count",
    "latency_ms_sum",
    "estimated",
    "unpriced",
    *LATENCY_FIELDS,
)
# The key of a rollup after its period (`hour` or `day`).
DIMENSION_FIELDS: tuple[str, ...] = (
    "team_id",
    "feature_key",
    "served_model",
    "provider",
    "endpoint",
)


class RollupQuerySet(models.QuerySet):
    def in_window(self, start, end) -> RollupQuerySet:
        period: str = getattr(self.model, "PERIOD_FIELD")  # noqa: B009 - set on each roll-up model
        return self.filter(**{f"{period}__gte": start, f"{period}__lt": end})

    def for_teams(self, team_ids: frozenset[int] | None) -> RollupQuerySet:
        """None means every team."""
        return self if team_ids is None else self.filter(team_id__in=team_ids)

    def for_endpoint(self, endpoint: str) -> RollupQuerySet:
        """ "" means every endpoint."""
        return self.filter(endpoint=endpoint) if endpoint else self

    def for_features(self, feature_keys: frozenset[int] | None) -> RollupQuerySet:
        """None means every feature (and requests with none)."""
        return self if feature_keys is None else self.filter(feature_key__in=feature_keys)


class Rollup(models.Model):
    """Sums of the ledger for one period × team × feature × served model × provider.

    Money is held in integer units (1e-10 USD, see gateway/money.py) so that SQL adds it
    exactly on every backend (SQLite has no exact decimal arithmetic).
    """

    PERIOD_FIELD: str

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    # A plain integer, not a nullable FK: NULLs never conflict in a unique index, and the
    # upsert needs one row per key. 0 means "no feature".
    feature_key = models.BigIntegerField(default=0)
    served_model = models.CharField(max_length=128, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    # UsageRecord.endpoint: chat.completions, embeddings... (the dashboards filter on it)
    endpoint = models.CharField(max_length=32, default="chat.completions")

    requests = models.BigIntegerField(default=0)
    cache_hits = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    refused = models.BigIntegerField(default=0)
    stream_errors = models.BigIntegerField(default=0)
    lost = models.BigIntegerField(
        default=0, help_text="Requests whose serving process died before they were recorded."
    )
    fallbacks = models.BigIntegerField(default=0, help_text="Requests that needed > 1 attempt.")
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    cost_units = models.BigIntegerField(default=0)
    saved_units = models.BigIntegerField(default=0, help_text="Saved by the response cache.")
    # Token counts the savings are repriced from (reports/savings.py): "billed" are the
    # requests a provider answered at a known price, "hit" the cache hits.
    billed_input_tokens = models.BigIntegerField(default=0)
    billed_output_tokens = models.BigIntegerField(default=0)
    billed_cached_tokens = models.BigIntegerField(default=0)
    billed_cache_write_tokens = models.BigIntegerField(default=0)
    hit_input_tokens = models.BigIntegerField(default=0)
    hit_output_tokens = models.BigIntegerField(default=0)
    hit_cached_tokens = models.BigIntegerField(default=0)
    fallback_extra_units = models.BigIntegerField(
        default=0,
        help_text="Fallbacks: what the served model cost minus the route's first model's "
        "price for the same tokens, on the day of the request.",
    )
    latency_count = models.BigIntegerField(default=0, help_text="Requests that reached a provider.")
    latency_ms_sum = models.BigIntegerField(default=0)
    estimated = models.BigIntegerField(default=0)
    unpriced = models.BigIntegerField(default=0)
    lat_b0 = models.BigIntegerField(default=0)
    lat_b1 = models.BigIntegerField(default=0)
    lat_b2 = models.BigIntegerField(default=0)
    lat_b3 = models.BigIntegerField(default=0)
    lat_b4 = models.BigIntegerField(default=0)
    lat_b5 = models.BigIntegerField(default=0)
    lat_b6 = models.BigIntegerField(default=0)
    lat_b7 = models.BigIntegerField(default=0)
    lat_b8 = models.BigIntegerField(default=0)
    lat_b9 = models.BigIntegerField(default=0)
    lat_b10 = models.BigIntegerField(default=0)
    lat_b11 = models.BigIntegerField(default=0)
    lat_b12 = models.BigIntegerField(default=0)
    lat_b13 = models.BigIntegerField(default=0)
    lat_b14 = models.BigIntegerField(default=0)
    lat_b15 = models.BigIntegerField(default=0)
    lat_b16 = models.BigIntegerField(default=0)

    objects = RollupQuerySet.as_manager()

    class Meta:
        abstract = True


class HourlyRollup(Rollup):
    """One UTC hour: what the 24 h and 48 h views, and budget windows, read."""

    PERIOD_FIELD = "hour"
    hour = models.DateTimeField(help_text="Start of the UTC hour.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hour", *DIMENSION_FIELDS], name="rollup_one_row_per_key"
            ),
        ]
        indexes = [models.Index(fields=["team", "hour"])]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00 team={self.team_id} {self.served_model}"


class DailyRollup(Rollup):
    """One UTC day, the sum of its hourly rollups: what ranges of days read (24× fewer rows)."""

    PERIOD_FIELD = "day"
    day = models.DateTimeField(help_text="Start of the UTC day.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", *DIMENSION_FIELDS], name="daily_rollup_one_row_per_key"
            ),
        ]
        indexes = [models.Index(fields=["team", "day"])]

    def __str__(self) -> str:
        return f"{self.day:%Y-%m-%d} team={self.team_id} {self.served_model}"


class CircuitEvent(models.Model):
    """A circuit breaker opening for a provider (and model, when the breaker is per model)."""

    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=128, blank=True)
    opened_at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=16, default="opened")
    reason = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "model", "opened_at", "kind"], name="circuit_event_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.kind} at {self.opened_at:%Y-%m-%d %H:%M:%S}"


class ManagerScope(models.Model):
    """The teams whose reports a manager (or non-superuser staff) may read.

    Least privilege: a reader sees exactly these teams, and none without a scope. Only
    superusers and holders of the `view_all_teams` permission see every team.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="report_scope"
    )
    teams = models.ManyToManyField(Team, blank=True, related_name="+")

    class Meta:
        verbose_name = "report access"
        verbose_name_plural = "report access"
        permissions = [("view_all_teams", "Can read the reports of every team")]

    def __str__(self) -> str:
        return f"Report scope of {self.user}"


class Incident(models.Model):
    """Something that went wrong long enough to tell a person: a hard budget's first refusal
    in a window, a feature spending far above its usual for the hour, a burst of identical
    requests from one key, a provider outage. Written by the detector task from the ledger
    and the circuit events (reports/incidents.py), never on the request path; one record per
    occurrence (`dedupe`), updated while it lasts."""

    class Kind(models.TextChoices):
        BUDGET_STOP = "budget_stop", "hard budget stopped a feature"
        SPEND_SPIKE = "spend_spike", "spend far above the usual for the hour"
        IDENTICAL_BURST = "identical_burst", "burst of identical requests from one key"
        OUTAGE = "outage", "provider outage"

    kind = models.CharField(max_length=16, choices=Kind)
    dedupe = models.CharField(max_length=200, unique=True, editable=False)
    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True, help_text="Blank: still going on.")
    team = models.ForeignKey(
        Team, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    feature = models.ForeignKey(
        "gateway.Feature", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    api_key = models.ForeignKey(
        "gateway.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    budget = models.ForeignKey(
        "budgets.Budget", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    provider = models.CharField(max_length=64, blank=True)
    requests = models.PositiveIntegerField(default=0, help_text="Requests it covers.")
    requests_refused = models.PositiveIntegerField(
        default=0, help_text="Requests refused (budget) or failed (outage) during it."
    )
    spend_usd = models.DecimalField(
        max_digits=20,
        decimal_places=10,
        default=0,
        help_text="What was spent until the stop (budget: the window's spend at the first "
        "refusal; outage: the fallbacks' cost).",
    )
    summary = models.TextField()
    detail = models.JSONField(default=dict, blank=True)
    alerted_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was sent to the alert channels."
    )

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} from {self.started_at:%Y-%m-%d %H:%M}"
