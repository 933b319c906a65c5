"""The periodic tasks the beat schedule names exist and do their job."""

from __future__ import annotations

import pytest
from django.conf import settings

from gateway import ledger
from gateway.models import UsageRecord
from gateway.tasks import drain_ledger
from gatewaysite.celery import app
from tests.factories import make_team
from tests.gateway.test_ledger import entry


def test_every_task_in_the_beat_schedule_is_registered():
    app.loader.import_default_modules()
    for job in settings.CELERY_BEAT_SCHEDULE.values():
        assert job["task"] in app.tasks, job["task"]


@pytest.mark.django_db(transaction=True)
def test_the_drain_task_moves_queued_records_into_the_ledger():
    team = make_team()
    ledger.spool().items.append(ledger.encode(entry(team)))
    assert drain_ledger.delay().get() == 1
    assert UsageRecord.objects.count() == 1
