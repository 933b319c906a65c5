"""The Celery app. Eager (in-process) unless CELERY_BROKER_URL is set."""

import os
from pathlib import Path

from celery import Celery
from celery.beat import PersistentScheduler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

app = Celery("gatewaysite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class Scheduler(PersistentScheduler):
    """Beat keeps its state in CELERY_BEAT_SCHEDULE_FILENAME (var/ by default): its folder is
    made before the file is opened, on a fresh checkout too. (The `beat_init` signal comes
    after beat has opened it: too late.)"""

    def __init__(self, *args, **kwargs) -> None:
        filename = kwargs.get("schedule_filename") or app.conf.beat_schedule_filename
        Path(filename).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(*args, **kwargs)
