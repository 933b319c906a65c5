"""The daily spend digest: one e-mail per team with yesterday's spend, by feature."""

from __future__ import annotations

from datetime import datetime

import redis as redis_sync
from django.core.mail import send_mail
from django.utils import timezone

from budgets import spend
from budgets.keys import DIGEST_CLAIM_TTL_S, digest_claim_key
from budgets.models import Budget
from budgets.windows import Window, previous_day
from gateway.models import Feature, Team
from gateway.money import format_usd, units_to_usd


def recipients(team: Team) -> list[str]:
    """Everyone who receives an alert for one of the team's enabled budgets."""
    emails: dict[str, None] = {}
    for budget in Budget.objects.filter(team=team, enabled=True):
        emails.update(dict.fromkeys(budget.emails))
    return list(emails)


def _counts(sums: spend.Totals) -> str:
    """'3 served', then refused and failed requests when there were any."""
    parts = [f"{sums.served} served"]
    parts += [
        f"{n} {name}" for name, n in (("refused", sums.refused), ("failed", sums.failed)) if n
    ]
    return ", ".join(parts)


def digest_text(*, team: Team, day: Window) -> str | None:
    """The digest of one day, or None when the team made no request that day.

    Served, refused (budgets, rate limits) and failed requests are counted apart: a refused
    request is not traffic the team was served, and a day of refusals is news of its own.
    Read from `budgets.spend` (the roll-ups, once the reports app registered them)."""
    by_feature = {
        feature: sums
        for (team_id, feature), sums in spend.totals(day.start, day.end, [team.pk]).items()
        if team_id == team.pk
    }
    if not by_feature:
        return None
    names = dict(Feature.objects.filter(pk__in=by_feature).values_list("pk", "name"))
    rows = sorted(
        ((names.get(feature) or "(no feature)", sums) for feature, sums in by_feature.items()),
        key=lambda row: (row[0] == "(no feature)", row[0]),
    )
    day_sums = spend.Totals()
    for _, sums in rows:
        day_sums.add(sums)
    lines = [
        f'Spend of team "{team.name}" on {day.key} ({team.timezone}): '
        f"${format_usd(units_to_usd(day_sums.cost_units))}; requests: {_counts(day_sums)}."
    ]
    lines += [
        f"  {name}: ${format_usd(units_to_usd(sums.cost_units))} ({_counts(sums)})"
        for name, sums in rows
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
