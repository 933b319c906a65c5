"""The daily spend digest: one e-mail per team with yesterday's spend, by feature."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import redis as redis_sync
from django.core.mail import send_mail
from django.db.models import Count, Q, Sum
from django.utils import timezone

from budgets.keys import DIGEST_CLAIM_TTL_S, digest_claim_key
from budgets.models import Budget
from budgets.windows import Window, previous_day
from gateway.models import Team, UsageRecord
from gateway.money import format_usd


def recipients(team: Team) -> list[str]:
    """Everyone who receives an alert for one of the team's enabled budgets."""
    emails: dict[str, None] = {}
    for budget in Budget.objects.filter(team=team, enabled=True):
        emails.update(dict.fromkeys(budget.emails))
    return list(emails)


def _counts(row: dict) -> str:
    """'3 served', then refused and failed requests when there were any."""
    parts = [f"{row['served']} served"]
    parts += [f"{row[k]} {k}" for k in ("refused", "failed") if row[k]]
    return ", ".join(parts)


def digest_text(*, team: Team, day: Window) -> str | None:
    """The digest of one day, or None when the team made no request that day.

    Served, refused (budgets, rate limits) and failed requests are counted apart: a refused
    request is not traffic the team was served, and a day of refusals is news of its own."""
    status = UsageRecord.Status
    rows = list(
        UsageRecord.objects.for_team(team)
        .between(day.start, day.end)
        .values("feature__name")
        .annotate(
            cost=Sum("cost_usd"),
            served=Count("id", filter=Q(status=status.OK)),
            refused=Count("id", filter=Q(status=status.REFUSED)),
            failed=Count("id", filter=~Q(status__in=[status.OK, status.REFUSED])),
        )
        .order_by("feature__name")
    )
    if not rows:
        return None
    total = sum((r["cost"] or Decimal(0) for r in rows), start=Decimal(0))
    day_counts = {k: sum(r[k] for r in rows) for k in ("served", "refused", "failed")}
    lines = [
        f'Spend of team "{team.name}" on {day.key} ({team.timezone}): '
        f"${format_usd(total)}; requests: {_counts(day_counts)}."
    ]
    lines += [
        f"  {r['feature__name'] or '(no feature)'}: ${format_usd(r['cost'] or Decimal(0))}"
        f" ({_counts(r)})"
        for r in rows
    ]
    return "\n".join(lines)


def send_daily_digests(*, redis: redis_sync.Redis, now: datetime | None = None) -> int:
    """E-mail each team's spend of yesterday (in its time zone) to its budgets' alert addresses.

    Teams that made no request yesterday get no e-mail.

    Each team and day is claimed in Redis first, so a retried or duplicated run sends once;
    a failed send gives the claim back and raises (the task retries). Returns how many sent.
    """
    now = now or timezone.now()
    sent = 0
    for team in Team.objects.all():
        to = recipients(team)
        if not to:
            continue
        day = previous_day(team.timezone, now)
        text = digest_text(team=team, day=day)
        claim = digest_claim_key(team.pk, day.key)
        if text is None or not redis.set(claim, 1, nx=True, ex=DIGEST_CLAIM_TTL_S):
            continue
        try:
            send_mail(
                f"LLM gateway spend for {team.name} on {day.key}",
                text,
                None,
                to,
                fail_silently=False,
            )
        except BaseException:
            redis.delete(claim)
            raise
        sent += 1
    return sent
