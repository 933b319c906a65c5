"""Budgets per team or feature, and the record of every alert sent for them."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from gateway.models import Feature, Team


def default_thresholds() -> list[int]:
    return [50, 80, 100]


def validate_thresholds(value) -> None:
    if not isinstance(value, list) or not all(isinstance(v, int) and 0 < v <= 1000 for v in value):
        raise ValidationError("Thresholds are a list of whole percentages, e.g. [50, 80, 100].")


class Reservation(models.TextChoices):
    CAP = "cap", "Output cap (default)"
    STRICT = "strict", "Strict: the model's max output"


class Budget(models.Model):
    Reservation = Reservation

    class Scope(models.TextChoices):
        TEAM = "team", "Team"
        FEATURE = "feature", "Feature"

    scope = models.CharField(max_length=8, choices=Scope, default=Scope.TEAM)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="budgets")
    feature = models.ForeignKey(
        Feature,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="budgets",
        help_text="Required when the scope is a feature.",
    )
    daily_limit_usd = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Blank: no daily limit.",
    )
    monthly_limit_usd = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Blank: no monthly limit.",
    )
    alert_thresholds = models.JSONField(
        default=default_thresholds,
        validators=[validate_thresholds],
        help_text="Percentages of each limit that send an alert, e.g. [50, 80, 100].",
    )
    hard = models.BooleanField(
        default=True, help_text="Hard budgets refuse requests; soft ones only alert."
    )
    reservation = models.CharField(
        max_length=8,
        choices=Reservation,
        default=Reservation.CAP,
        help_text="What a request without max_tokens holds while in flight. Cap: its feature's "
        "output cap, sent upstream (never overspent; an answer may end at the cap, with "
        'finish_reason "length"). Strict: the model\'s max output (never overspent, never cut '
        "by the gateway, but far fewer concurrent requests fit under the limit).",
    )
    alert_emails = models.TextField(
        blank=True, help_text="One address per line or comma-separated."
    )
    webhook_url = models.URLField(
        blank=True, help_text="A JSON POST (Slack incoming webhooks accept it)."
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["team__name", "scope", "feature__name"]

    def __str__(self) -> str:
        target = self.feature if self.scope == self.Scope.FEATURE else self.team
        return f"{self.get_scope_display()} budget: {target}"

    def clean(self) -> None:
        if self.scope == self.Scope.FEATURE and not self.feature_id:
            raise ValidationError({"feature": "A feature budget needs a feature."})
        if self.scope == self.Scope.TEAM and self.feature_id:
            raise ValidationError(
                {"feature": "A team budget covers every feature; leave this blank."}
            )
        feature = self.feature if self.feature_id else None
        if feature is not None and self.team_id and feature.team_id != self.team_id:
            raise ValidationError({"feature": "The feature belongs to another team."})

    @property
    def emails(self) -> list[str]:
        return [e.strip() for e in self.alert_emails.replace(",", "\n").splitlines() if e.strip()]

    def limit_for(self, window: str) -> Decimal | None:
        return self.daily_limit_usd if window == "daily" else self.monthly_limit_usd


class BudgetAlert(models.Model):
    class Channel(models.TextChoices):
        EMAIL = "email", "e-mail"
        WEBHOOK = "webhook", "webhook"

    class Status(models.TextChoices):
        SENT = "sent", "sent"
        FAILED = "failed", "failed"

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    window = models.CharField(max_length=8)  # "daily" or "monthly"
    window_key = models.CharField(max_length=16, help_text="e.g. 2026-11-27 or 2026-11")
    threshold = models.PositiveSmallIntegerField()
    spend_usd = models.DecimalField(max_digits=20, decimal_places=10)
    limit_usd = models.DecimalField(max_digits=14, decimal_places=4)
    channel = models.CharField(max_length=8, choices=Channel)
    status = models.CharField(max_length=8, choices=Status)
    attempt = models.PositiveSmallIntegerField(default=1)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.budget} {self.window} {self.threshold}% via {self.channel}: {self.status}"
