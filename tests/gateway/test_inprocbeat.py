"""The beat schedule inside the web process (gateway/inprocbeat.py), for the embedded mode
where no worker and beat run: entries run when Celery's schedule says so, on the clock the
process reads, one failure does not stop the others, and the real schedule's monthly report
goes out on the 1st."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from gateway import inprocbeat
from gateway.lifespan import LifespanApp
from gatewaysite.celery import app as celery_app

pytestmark = pytest.mark.django_db
RAN: list[str] = []


@celery_app.task(name="tests.gateway.test_inprocbeat.probe")
def probe(label: str = "probe") -> str:
    RAN.append(label)
    return label


@celery_app.task(name="tests.gateway.test_inprocbeat.broken")
def broken() -> None:
    RAN.append("broken")
    raise RuntimeError("a task that fails")


@pytest.fixture(autouse=True)
def _ran():
    RAN.clear()
    yield
    RAN.clear()


def test_an_interval_entry_runs_one_interval_after_the_start_and_then_each_interval():
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        beat = inprocbeat.Beat(
            {"p": {"task": "tests.gateway.test_inprocbeat.probe", "schedule": 60.0}}
        )
        assert 1.0 <= beat.tick() <= 60.0 and RAN == []
        clock.shift(dt.timedelta(seconds=61))
        beat.tick()
        assert RAN == ["probe"]
        beat.tick()  # not due again yet
        assert RAN == ["probe"]
        clock.shift(dt.timedelta(seconds=60))
        beat.tick()
        assert RAN == ["probe", "probe"]


def test_a_failing_task_is_logged_and_the_others_still_run(caplog):
    schedule = {
        "broken": {"task": "tests.gateway.test_inprocbeat.broken", "schedule": 10.0},
        "probe": {"task": "tests.gateway.test_inprocbeat.probe", "schedule": 10.0},
    }
    with time_machine.travel(timezone.now(), tick=False) as clock:
        beat = inprocbeat.Beat(schedule)
        clock.shift(dt.timedelta(seconds=11))
        beat.tick()
    assert RAN == ["broken", "probe"]
    assert "broken (tests.gateway.test_inprocbeat.broken) failed" in caplog.text


def test_the_drain_and_the_sweep_are_left_to_the_flusher():
    tasks = {entry.task for entry in inprocbeat.Beat().entries}
    assert "gateway.tasks.drain_ledger" not in tasks
    assert "gateway.tasks.sweep_lost_requests" not in tasks
    assert {"reports.tasks.detect_incidents", "reports.tasks.send_monthly_reports"} <= tasks


def test_the_real_schedule_mails_the_monthly_report_on_the_first(mailoutbox):
    from tests.factories import make_budget, make_feature, make_team
    from tests.reports.conftest import make_record, write_ledger
    from tests.reports.test_monthly import this_month

    acme = make_team("acme")
    chat = make_feature(acme, "chat")
    make_budget(acme, monthly_limit_usd="10", alert_emails="cfo@example.com")
    month = this_month()  # "last month" on the next 1st
    write_ledger([make_record(acme, chat, created_at=month.start + dt.timedelta(hours=12))])
    with time_machine.travel(month.end - dt.timedelta(days=1), tick=False) as clock:
        beat = inprocbeat.Beat()
        clock.move_to(month.end + dt.timedelta(hours=settings.DIGEST_HOUR_UTC, minutes=31))
        beat.tick()
        beat.tick()  # sent once
    reports = [m for m in mailoutbox if "monthly report" in m.subject]
    assert [(m.to, m.subject) for m in reports] == [
        (["cfo@example.com"], f"LLM gateway monthly report for acme, {month.key}")
    ]


def test_the_lifespan_starts_the_beat_only_where_asked(settings):
    async def start(flag: bool) -> asyncio.Task | None:
        settings.GATEWAY = {**settings.GATEWAY, "BEAT_IN_PROCESS": flag, "LEDGER_IN_PROCESS": False}
        app = LifespanApp(lambda *a: None)
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive():
            return next(messages)

        async def send(message):
            if message["type"] == "lifespan.startup.complete":
                started.append(app.beat)

        started: list = []
        await app({"type": "lifespan"}, receive, send)
        return started[0]

    assert asyncio.run(start(False)) is None
    assert asyncio.run(start(True)) is not None
