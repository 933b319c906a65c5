"""Incidents on the alert channels: the e-mail addresses and webhooks of the budgets that
cover the incident's team and feature (budgets/alerts.py's channels), or, for an outage that
concerns every team, the site's ADMINS. A budget stop sends nothing here: the "budget
exhausted" alert already said it (budgets/exhaustion.py), and the incident links to it.

Sent once: `alerted_at` is set when every channel took it; a failed channel leaves it unset
and the next detector run tries again (for a day)."""

from __future__ import annotations

import datetime as dt
import logging

import httpx
from django.core.mail import mail_admins, send_mail
from django.db.models import Q
from django.utils import timezone

from budgets.models import Budget
from reports.models import Incident

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 10.0
RETRY_FOR = dt.timedelta(days=1)


def channels(incident: Incident) -> tuple[list[str], list[str]]:
    """(e-mail addresses, webhook URLs) for the incident; both empty for an outage."""
    if incident.team_id is None:
        return [], []
    covering = Budget.objects.filter(team_id=incident.team_id, enabled=True).filter(
        Q(scope=Budget.Scope.TEAM) | Q(feature_id=incident.feature_id)
    )
    emails: list[str] = []
    hooks: list[str] = []
    for budget in covering:
        emails += [e for e in budget.emails if e not in emails]
        if budget.webhook_url and budget.webhook_url not in hooks:
            hooks.append(budget.webhook_url)
    return emails, hooks


def text(incident: Incident) -> str:
    where = " / ".join(
        x
        for x in (
            incident.team.name if incident.team else "",
            incident.feature.name if incident.feature else "",
            f"key {incident.api_key.prefix}…" if incident.api_key else "",
            incident.provider,
        )
        if x
    )
    since = f"{incident.started_at:%Y-%m-%d %H:%M} UTC"
    return f"Incident: {incident.get_kind_display()} ({where}), since {since}. {incident.summary}"


def send(incident: Incident, http: httpx.Client | None = None) -> bool:
    """Deliver on every channel; True (and `alerted_at` set) when all of them took it."""
    body = text(incident)
    subject = body.split(". ", 1)[0][:150]
    emails, hooks = channels(incident)
    try:
        if incident.team_id is None:
            mail_admins(subject, body, fail_silently=False)
        elif emails:
            send_mail(subject, body, None, emails, fail_silently=False)
        for url in hooks:
            if http is None:
                with httpx.Client(timeout=WEBHOOK_TIMEOUT_S) as client:
                    client.post(url, json={"text": body}).raise_for_status()
            else:
                http.post(url, json={"text": body}).raise_for_status()
    except (OSError, httpx.HTTPError) as exc:
        log.warning("incident %s alert failed: %s", incident.pk, exc)
        return False
    Incident.objects.filter(pk=incident.pk).update(alerted_at=timezone.now())
    return True


def send_pending(now: dt.datetime | None = None) -> int:
    """Every incident not yet announced (budget stops excepted), from the last day."""
    now = now or timezone.now()
    pending = (
        Incident.objects.filter(alerted_at__isnull=True, started_at__gte=now - RETRY_FOR)
        .exclude(kind=Incident.Kind.BUDGET_STOP)
        .select_related("team", "feature", "api_key")
    )
    return sum(send(i) for i in pending)
