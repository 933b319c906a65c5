"""Celery tasks: thin, id-taking, idempotent wrappers around the budget services."""

from __future__ import annotations

from celery import shared_task

from budgets import alerts, digests, reconcile
from gateway.runtime import sync_redis


@shared_task(
    bind=True,
    autoretry_for=(alerts.AlertDeliveryFailed,),
    retry_backoff=30,
    retry_backoff_max=1800,
    retry_jitter=True,
    max_retries=6,
    time_limit=60,
    soft_time_limit=50,
    acks_late=True,
)
def send_budget_alert(
    self,
    budget_id: int,
    window: str,
    window_key: str,
    threshold: int,
    spend_units: int,
    exhausted: bool = False,
) -> int:
    """Send one threshold alert (or, `exhausted`, the "requests are being refused" one);
    channels that already delivered it are skipped."""
    records = alerts.send_alert(
        budget_id=budget_id,
        window=window,
        window_key=window_key,
        threshold=threshold,
        spend_units=spend_units,
        exhausted=exhausted,
    )
    return len(records)


@shared_task(time_limit=300, soft_time_limit=270)
def reconcile_counters() -> dict:
    """Periodic: raise Redis counters to the ledger and report drift (see rebuild_counters)."""
    return reconcile.rebuild_counters(redis=sync_redis())


@shared_task(
    autoretry_for=(OSError,), retry_backoff=60, max_retries=5, time_limit=600, soft_time_limit=570
)
def send_daily_digests() -> int:
    """Daily: one e-mail per team with yesterday's spend."""
    return digests.send_daily_digests(redis=sync_redis())
