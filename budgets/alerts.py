"""Sending a budget's threshold alert by e-mail and webhook, recording every attempt."""

from __future__ import annotations

import logging
from decimal import Decimal

import httpx
from django.core.mail import send_mail

from budgets.models import Budget, BudgetAlert
from gateway.money import format_usd, units_to_usd

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 10.0


class AlertDeliveryFailed(Exception):
    """At least one channel failed; the task retries it (and only it) with backoff."""


def alert_text(
    *,
    budget: Budget,
    window: str,
    window_key: str,
    threshold: int,
    spend_units: int,
    exhausted: bool = False,
) -> str:
    limit = _limit(budget, window)
    if exhausted:
        target = budget.feature if budget.scope == Budget.Scope.FEATURE else budget.team
        left = max(Decimal(0), limit - units_to_usd(spend_units))
        return (
            f"Budget exhausted: requests are being refused. The {window} {budget.scope} budget"
            f" of {target} ({window_key}) has ${format_usd(units_to_usd(spend_units))} spent of"
            f" ${format_usd(limit)}; the ${format_usd(left)} left cannot cover what its requests"
            " reserve, so they get 429 budget_exceeded until the window resets or the limit is"
            " raised."
        )
    kind = "hard: requests are refused past the limit" if budget.hard else "soft: alerts only"
    target = budget.feature if budget.scope == Budget.Scope.FEATURE else budget.team
    return (
        f"Budget alert: the {window} {budget.scope} budget of {target} ({window_key}) has reached"
        f" {threshold}% of its limit: ${format_usd(units_to_usd(spend_units))} spent of"
        f" ${format_usd(limit)} ({kind})."
    )


def send_alert(
    *,
    budget_id: int,
    window: str,
    window_key: str,
    threshold: int,
    spend_units: int,
    http: httpx.Client | None = None,
    exhausted: bool = False,
) -> list[BudgetAlert]:
    """Send the alert on every channel of the budget that has not already delivered it.

    Idempotent: a channel with a `sent` record for this budget, window and threshold is
    skipped, so a retried or duplicated task never sends twice. Each attempt is recorded as a
    BudgetAlert. Raises AlertDeliveryFailed when a channel failed.
    """
    budget = Budget.objects.select_related("team", "feature").filter(pk=budget_id).first()
    if budget is None or budget.limit_for(window) is None:
        return []  # deleted, or the limit was removed since the crossing
    text = alert_text(
        budget=budget,
        window=window,
        window_key=window_key,
        threshold=threshold,
        spend_units=spend_units,
        exhausted=exhausted,
    )
    channels = []
    if budget.emails:
        subject = f"Budget alert: {budget} reached {threshold}% ({window} {window_key})"
        if exhausted:
            subject = f"Budget exhausted: {budget} is refusing requests ({window} {window_key})"
        channels.append((BudgetAlert.Channel.EMAIL, lambda: _email(budget, subject, text)))
    if budget.webhook_url:
        channels.append((BudgetAlert.Channel.WEBHOOK, lambda: _webhook(budget, text, http)))
    where = {"window": window, "window_key": window_key, "threshold": threshold}
    records = [
        record
        for channel, deliver in channels
        if (record := _attempt(budget, channel, deliver, where, spend_units)) is not None
    ]
    failed = [r for r in records if r.status == BudgetAlert.Status.FAILED]
    if failed:
        raise AlertDeliveryFailed("; ".join(f"{r.channel}: {r.error}" for r in failed))
    return records


def _limit(budget: Budget, window: str) -> Decimal:
    """The window's limit; an alert is only raised for a window that has one."""
    limit = budget.limit_for(window)
    if limit is None:
        raise ValueError(f"budget {budget.pk} has no {window} limit to alert on")
    return limit


def _attempt(
    budget: Budget, channel: str, deliver, where: dict, spend_units: int
) -> BudgetAlert | None:
    """One delivery on one channel, recorded; None when that channel already delivered it."""
    previous = BudgetAlert.objects.filter(budget=budget, channel=channel, **where)
    if previous.filter(status=BudgetAlert.Status.SENT).exists():
        return None
    error = ""
    try:
        deliver()
    except (OSError, httpx.HTTPError) as exc:  # smtplib errors are OSErrors
        error = f"{type(exc).__name__}: {exc}"
        log.warning("budget %s alert via %s failed: %s", budget.pk, channel, error)
    return BudgetAlert.objects.create(
        budget=budget,
        channel=channel,
        **where,
        spend_usd=units_to_usd(spend_units),
        limit_usd=_limit(budget, where["window"]),
        attempt=previous.count() + 1,
        error=error,
        status=BudgetAlert.Status.FAILED if error else BudgetAlert.Status.SENT,
    )


def _email(budget: Budget, subject: str, text: str) -> None:
    send_mail(subject, text, None, budget.emails, fail_silently=False)


def _webhook(budget: Budget, text: str, http: httpx.Client | None) -> None:
    # {"text": ...} is what a Slack incoming webhook accepts; other receivers get the same.
    if http is None:
        with httpx.Client(timeout=WEBHOOK_TIMEOUT_S) as client:
            client.post(budget.webhook_url, json={"text": text}).raise_for_status()
    else:
        http.post(budget.webhook_url, json={"text": text}).raise_for_status()
