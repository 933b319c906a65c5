"""Celery tasks of the gateway app: thin wrappers around gateway.ledger."""

from __future__ import annotations

from datetime import UTC, timedelta

from celery import shared_task

from gateway import inflight, ledger


@shared_task(time_limit=120, soft_time_limit=100, ignore_result=True)
def drain_ledger() -> int:
    """Periodic (beat, every 5 s): move queued usage records into the database.

    Safe to run alongside the web processes' own drainers: each ledger queue's Redis lock
    lets one drainer at a time work on it, and records already in the ledger are skipped.
    A drain still running when the next one starts (a backlog) leaves it the other queues.
    """
    return ledger.drain()


@shared_task(time_limit=600, soft_time_limit=540, ignore_result=True)
def learn_output_caps() -> int:
    """Periodic (beat, hourly): learn each feature's output cap from its ledger
    (gateway/outputcaps.py). Returns how many features have a learned cap."""
    from gateway import outputcaps

    return sum(1 for cap in outputcaps.learn_all().values() if cap is not None)


@shared_task(time_limit=120, soft_time_limit=100, ignore_result=True)
def sweep_lost_requests() -> int:
    """Periodic (beat, every 30 s): requests whose process died before they settled become
    `lost` ledger records, billed once, and their budget holds are released. Safe to run
    in several workers at once: each entry is claimed atomically (gateway/inflight.py)."""
    return inflight.sweep()


@shared_task(time_limit=3600, soft_time_limit=3300, ignore_result=True)
def maintain_ledger() -> str:
    """Periodic (beat, hourly): the ledger's day partitions for the week ahead exist
    (PostgreSQL, gateway/partitions.py), and with GATEWAY_LEDGER_RETENTION_DAYS set the
    whole days older than that are archived and dropped (`pruneledger`, never a day of the
    current month). Returns what it did, as pruneledger says it."""
    import io

    from django.conf import settings
    from django.core.management import call_command
    from django.utils import timezone

    from gateway import partitions
    from gateway.management.commands.pruneledger import latest_allowed

    created = partitions.ensure()
    keep = settings.GATEWAY["LEDGER_RETENTION_DAYS"]
    if not keep:
        return f"partitions created: {len(created)}"
    now = timezone.now()
    before = min(now.astimezone(UTC).date() - timedelta(days=keep), latest_allowed(now))
    out = io.StringIO()
    call_command("pruneledger", before=before.isoformat(), stdout=out)
    return f"partitions created: {len(created)}; {out.getvalue().strip().splitlines()[-1]}"
