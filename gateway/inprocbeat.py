"""The beat schedule run inside the web process, where no Celery worker or beat runs: the
embedded mode of `make run` (eager Celery). Without it, incidents, roll-up repairs, counter
reconciliation, learned output caps, the daily digest and the monthly report would never
happen there, and the dashboards would show none of them.

Each entry of `CELERY_BEAT_SCHEDULE` runs when Celery's own schedule object says it is due
(intervals and crontabs alike), eagerly, in the ledger's database thread, one at a time. The
ledger drain and the lost-request sweep are left out: the flusher already runs them
(`gateway.ledger.run_flusher`). As with beat, an interval entry first runs one interval after
the start. `GATEWAY_BEAT_IN_PROCESS` (default: on in the embedded mode only) switches it; with
a real worker and beat it stays off, so no task runs twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from gateway import runtime

log = logging.getLogger(__name__)

# Run by the flusher in every web process already.
IN_FLUSHER = frozenset({"gateway.tasks.drain_ledger", "gateway.tasks.sweep_lost_requests"})
LONGEST_SLEEP_S = 30.0  # a crontab's next run is checked at least this often
SHORTEST_SLEEP_S = 1.0


@dataclass
class Entry:
    name: str
    task: str
    schedule: Any  # celery.schedules.schedule or crontab
    last_run_at: dt.datetime


class Beat:
    """The schedule's entries and when each last ran; `tick()` runs the due ones."""

    def __init__(self, schedule: dict[str, dict] | None = None, app=None) -> None:
        from celery.schedules import maybe_schedule

        from gatewaysite.celery import app as celery_app

        self.app = app or celery_app
        # A web process never starts a worker, so Celery's autodiscovery has not imported the
        # tasks: import each entry's module (its name is the module path and the function).
        for spec in (schedule or settings.CELERY_BEAT_SCHEDULE).values():
            importlib.import_module(spec["task"].rpartition(".")[0])
        now = self.app.now()
        self.entries = [
            Entry(name, spec["task"], maybe_schedule(spec["schedule"], app=self.app), now)
            for name, spec in (schedule or settings.CELERY_BEAT_SCHEDULE).items()
            if spec["task"] not in IN_FLUSHER
        ]

    def tick(self) -> float:
        """Run every entry that is due (blocking: call it in a database thread); return the
        seconds until the next check."""
        wait = LONGEST_SLEEP_S
        for entry in self.entries:
            due, next_in = entry.schedule.is_due(entry.last_run_at)
            if due:
                entry.last_run_at = self.app.now()
                self._run(entry)
            wait = min(wait, next_in)
        return max(wait, SHORTEST_SLEEP_S)

    def _run(self, entry: Entry) -> None:
        """One task, eagerly; a failure is logged and does not stop the others."""
        try:
            result = self.app.tasks[entry.task].apply()
        except Exception:
            log.exception("in-process beat: %s (%s) failed", entry.name, entry.task)
            return
        if result.failed():
            log.error("in-process beat: %s (%s) failed: %r", entry.name, entry.task, result.result)
        else:
            log.debug("in-process beat: %s ran: %r", entry.name, result.result)


async def run(stop: asyncio.Event) -> None:
    """Until `stop` is set: run what is due, then sleep until the next is."""
    beat = Beat()
    while not stop.is_set():
        try:
            wait = await runtime.run_db("ledger", beat.tick)
        except Exception:
            log.exception("in-process beat: a tick failed")
            wait = LONGEST_SLEEP_S
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
        except TimeoutError:
            pass
