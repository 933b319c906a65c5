"""The Celery app. Eager (in-process) unless CELERY_BROKER_URL is set."""

import os
from pathlib import Path

from celery import Celery
from celery.signals import beat_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

app = Celery("gatewaysite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@beat_init.connect
def _schedule_folder(sender, **kwargs) -> None:
    """Beat keeps its state in CELERY_BEAT_SCHEDULE_FILENAME (var/ by default): make sure
    its folder exists on a fresh checkout."""
    Path(app.conf.beat_schedule_filename).parent.mkdir(parents=True, exist_ok=True)
