"""Records an admin edits (teams, keys, providers, models, routes) and the usage ledger."""

from __future__ import annotations

import hashlib
import secrets
import zoneinfo
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from gateway.providers import kind_choices

KEY_PREFIX = "gw-"


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"{value!r} is not a known time zone (e.g. UTC, Europe/Paris)"
        ) from None


class Team(models.Model):
    class CacheScope(models.TextChoices):
        TEAM = "team", "Team only"
        SHARED = "shared", "Shared with every team that opts in"

    name = models.SlugField(max_length=64, unique=True)
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_timezone],
        help_text="Budget days and months start at midnight in this time zone.",
    )
    cache_scope = models.CharField(max_length=8, choices=CacheScope, default=CacheScope.TEAM)
    budget_fail_open = models.BooleanField(
        default=False,
        help_text="When Redis is unreachable, let requests through instead of refusing them (503).",
    )
    store_content = models.BooleanField(
        default=False,
        help_text="Keep prompt and response text in the ledger (e-mail addresses and key-like "
        "strings are redacted).",
    )
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute.")
    tpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens per minute.")
    fallback_ceiling = models.DecimalField(
        max_digits=8,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("1"))],
        help_text="The most a fallback may cost, as a multiple of the first choice's price "
        "(e.g. 5: up to five times its price per token). A dearer fallback is skipped unless "
        "the request is high priority. Blank: no ceiling (a route's own ceiling still applies).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Feature(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="features")
    name = models.SlugField(max_length=64)
    default_cache_ttl = models.PositiveIntegerField(
        default=3600, help_text="Seconds a cached answer lives; 0 disables caching."
    )
    cache_sampled = models.BooleanField(
        default=True,
        help_text="Cache sampled answers too (temperature above 0, or unset: OpenAI's default "
        "is 1). On: a repeated question, or the user's regenerate button, returns the same "
        "text until the cached answer expires. Off: only temperature 0 answers are cached, and "
        "regenerate gets a new answer.",
    )
    output_cap = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Output tokens a request that sends no max_tokens may produce (sent upstream "
        "as its max tokens, and what its budget reservation holds). Blank: the learned cap.",
    )
    learned_output_cap = models.PositiveIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="Learned from this feature's ledger by the learn-output-caps task.",
    )
    learned_output_cap_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["team__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="feature_unique_per_team")
        ]

    def __str__(self) -> str:
        return f"{self.team.name}/{self.name}"


class ApiKeyQuerySet(models.QuerySet):
    def active(self) -> ApiKeyQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).exclude(expires_at__lte=now)


class ApiKey(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_keys")
    feature = models.ForeignKey(
        Feature,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="api_keys",
        help_text="Pin the key to one feature; otherwise callers name it in X-Gateway-Feature.",
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, editable=False, db_index=True)
    hashed_secret = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute.")
    tpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens per minute.")
    output_cap = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Output cap for this key's requests that send no max_tokens; overrides its "
        "feature's. Blank: the feature's cap.",
    )

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.team.name})"

    def clean(self) -> None:
        feature = self.feature if self.feature_id else None
        if feature is not None and self.team_id and feature.team_id != self.team_id:
            raise ValidationError({"feature": "The feature belongs to another team."})

    @staticmethod
    def hash_secret(secret: str) -> str:
        # A 256-bit random secret needs no slow hash: SHA-256 cannot be brute-forced from it.
        return hashlib.sha256(secret.encode()).hexdigest()

    def set_new_secret(self) -> str:
        """Give the key a fresh secret and return it; only its hash and prefix are stored."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        self.prefix = secret[:10]
        self.hashed_secret = self.hash_secret(secret)
        return secret

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()

    # The secret of a key just created, for the one page that shows it (not a field: only
    # its hash is stored).
    secret_shown_once: str = ""

    @property
    def status(self) -> str:
        """ "revoked", "expired" or "active", as the admin shows it."""
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.is_active else "expired"


class Provider(models.Model):
    name = models.SlugField(max_length=64, unique=True)
    # The kinds come from the adapter registry (a callable: a new adapter needs no migration).
    kind = models.CharField(max_length=32, choices=kind_choices)
    base_url = models.URLField(blank=True, help_text="e.g. https://api.openai.com/v1")
    api_key_env = models.CharField(
        max_length=128,
        blank=True,
        help_text="Name of the environment variable that holds the secret. Secrets never live "
        "in the database. Only names the operator allows (GATEWAY_PROVIDER_KEY_VARS, default "
        "*_API_KEY); the gateway's own settings are always refused.",
    )
    connect_timeout = models.FloatField(default=5.0, validators=[MinValueValidator(0.01)])
    read_timeout = models.FloatField(
        default=60.0,
        validators=[MinValueValidator(0.01)],
        help_text="Seconds to wait for the first byte and between streamed chunks.",
    )
    enabled = models.BooleanField(default=True)
    options = models.JSONField(
        default=dict,
        blank=True,
        help_text="Kind-specific settings, e.g. for simulated: "
        '{"latency_ms": 50, "failure_rate": 0.1}.',
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from gateway import keyvars

        try:
            keyvars.check(self.api_key_env)
        except keyvars.KeyVarRefused as exc:
            raise ValidationError({"api_key_env": str(exc)}) from None


PRICE_FIELD: dict[str, Any] = {"max_digits": 12, "decimal_places": 6, "null": True, "blank": True}


# What a model's `drop_params` may name: the chat parameters some provider cannot honour.
DROPPABLE_PARAMS = (
    "audio",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "prediction",
    "presence_penalty",
    "reasoning_effort",
    "response_format",
    "seed",
    "temperature",
    "top_logprobs",
    "web_search_options",
)


def validate_drop_params(value) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError('Expected a list of parameter names, e.g. ["seed", "logprobs"].')
    unknown = sorted(set(value) - set(DROPPABLE_PARAMS))
    if unknown:
        raise ValidationError(
            f"Unknown parameter(s) {', '.join(unknown)}; known: {', '.join(DROPPABLE_PARAMS)}."
        )


class LanguageModel(models.Model):
    class Mode(models.TextChoices):
        CHAT = "chat", "chat (/v1/chat/completions)"
        EMBEDDING = "embedding", "embedding (/v1/embeddings)"

    name = models.CharField(max_length=128, unique=True, help_text="The name clients send.")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="models")
    upstream_id = models.CharField(max_length=128, help_text="The model id the provider expects.")
    input_per_mtok = models.DecimalField(**PRICE_FIELD, help_text="USD per million input tokens.")
    output_per_mtok = models.DecimalField(**PRICE_FIELD, help_text="USD per million output tokens.")
    cached_input_per_mtok = models.DecimalField(
        **PRICE_FIELD, help_text="USD per million cached input tokens read (blank: input price)."
    )
    cache_write_per_mtok = models.DecimalField(
        **PRICE_FIELD,
        help_text="USD per million tokens written to the prompt cache (blank: input price).",
    )
    context_window = models.PositiveIntegerField(default=128000)
    max_output_tokens = models.PositiveIntegerField(default=4096)
    drop_params = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_drop_params],
        help_text="Request parameters this model's provider cannot honour that are dropped on "
        'purpose instead of refused, e.g. ["seed", "logprobs"]. Empty: a request asking for '
        "one gets a 400 naming it (or the fallback chain skips this model). See "
        "docs/compatibility.md.",
    )
    mode = models.CharField(
        max_length=16,
        choices=Mode,
        default=Mode.CHAT,
        help_text="The endpoint this model serves; called on another one it answers a 400.",
    )
    dimensions = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Embedding models: the vector's length. Embeddings fall back only to a model "
        "with the same dimensions (blank: unknown, falls back to none).",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        verbose_name = "model"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        """Saving also keeps the price history (a changed price appends a dated row), so
        past requests are repriced at the price of their own day (gateway/pricehistory.py)."""
        super().save(*args, **kwargs)
        ModelPrice.record(self)

    @property
    def is_priced(self) -> bool:
        return self.input_per_mtok is not None and self.output_per_mtok is not None


class Fallback(models.Model):
    model = models.ForeignKey(
        LanguageModel, on_delete=models.CASCADE, related_name="fallback_links"
    )
    target = models.ForeignKey(LanguageModel, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["model", "target"], name="fallback_once")]

    def __str__(self) -> str:
        return f"{self.model} → {self.target}"

    def clean(self) -> None:
        if self.model_id and self.model_id == self.target_id:
            raise ValidationError({"target": "A model cannot fall back to itself."})


class RouteRule(models.Model):
    """One ordered rule for requests that ask for `auto` or name no model; first match wins."""

    class Priority(models.TextChoices):
        ANY = "", "any"
        LOW = "low", "low"
        MEDIUM = "medium", "medium"
        HIGH = "high", "high"

    position = models.PositiveSmallIntegerField(default=0)
    name = models.CharField(max_length=64, unique=True)
    priority = models.CharField(max_length=8, choices=Priority, blank=True, default="")
    max_prompt_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Match only prompts of at most this many (estimated) tokens.",
    )
    max_output_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Match only requests whose max_tokens is set and at most this.",
    )
    fallback_ceiling = models.DecimalField(
        max_digits=8,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("1"))],
        help_text="The most a fallback may cost, as a multiple of the first choice's price "
        "(e.g. 5: up to five times its price per token). A dearer fallback is skipped unless "
        "the request is high priority. Blank: the team's ceiling.",
    )
    allow_above_ceiling = models.BooleanField(
        default=False,
        help_text="Let this route's fallbacks run whatever their price (no ceiling applies).",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name


class RouteStep(models.Model):
    rule = models.ForeignKey(RouteRule, on_delete=models.CASCADE, related_name="steps")
    model = models.ForeignKey(LanguageModel, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.rule}: {self.model}"


class LoginAttempts(models.Model):
    """Login attempts of one (client IP, username) pair in the current window, counted here
    only while Redis is unreachable (gateway/loginguard.py); the key is a hash, never the
    username or the address."""

    key = models.CharField(max_length=100, unique=True)
    count = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField()

    class Meta:
        verbose_name = "login attempt count"

    def __str__(self) -> str:
        return f"{self.count} attempts until {self.expires_at:%Y-%m-%d %H:%M}"


# Defined apart to keep this module short; imported here so Django registers them.
from gateway.pricehistory import Baseline, ModelPrice  # noqa: E402, F401
from gateway.usagerecord import (  # noqa: E402, F401
    ENDPOINTS,
    DeadLetter,
    UsageRecord,
    UsageRecordQuerySet,
)
