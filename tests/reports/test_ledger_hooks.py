"""The roll-ups reach the ledger's drain through the hooks reports connects at ready().

The gateway imports nothing of reports (docs/architecture.md); these prove the drain still
feeds the dashboards: a drained usage record lands in the hourly roll-up, and a circuit
opening pushed by the breaker's own script becomes a CircuitEvent.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from gateway import circuit, ledger, runtime
from reports import rollups
from reports.models import CircuitEvent, HourlyRollup
from tests.factories import make_key, make_team
from tests.gateway.test_ledger import entry

pytestmark = pytest.mark.django_db(transaction=True)


def test_reports_connects_its_rollups_to_the_drain_once():
    assert ledger.HOOKS.on_records.count(rollups.apply) == 1
    assert ledger.HOOKS.on_circuit_events.count(rollups.record_circuit_events) == 1


async def test_a_drained_record_is_rolled_up():
    team = await asyncio.to_thread(make_team, "hooks")
    key, _ = await asyncio.to_thread(make_key, team)
    await ledger.enqueue(entry(team, key))
    assert await asyncio.to_thread(ledger.drain) == 1
    rows = await asyncio.to_thread(lambda: list(HourlyRollup.objects.filter(team=team)))
    assert sum(r.requests for r in rows) == 1


async def test_a_circuit_opening_reaches_the_dashboard_through_the_drain(settings, monkeypatch):
    settings.GATEWAY = {**settings.GATEWAY, "CIRCUIT_FAILURES": 2, "CIRCUIT_COOLDOWN_S": 10}
    opened_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    monkeypatch.setattr(circuit, "_now_ms", lambda: int(opened_at.timestamp() * 1000))
    redis = runtime.aredis()
    try:
        for _ in range(2):
            await circuit.record_failure(redis, "openai")
    finally:
        await runtime.close_loop_clients()
    await asyncio.to_thread(ledger.drain)
    events = await asyncio.to_thread(lambda: list(CircuitEvent.objects.all()))
    assert [(e.provider, e.opened_at, e.reason) for e in events] == [
        ("openai", opened_at, "consecutive_failures")
    ]
