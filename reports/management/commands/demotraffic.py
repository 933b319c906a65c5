"""python manage.py demotraffic [--requests N] [--backfill-days D]"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from budgets.models import BudgetAlert
from gateway.models import ApiKey, Feature, Provider, Team
from reports import demo, incident_alerts, incidents, rollups
from reports.backfill import backfill

DEMO_KEY_FILE = Path(settings.BASE_DIR) / "var" / "demo-key.txt"
KEY_NAME = "demotraffic"
KNOWN_FEATURES = {t.name for t in demo.FEATURES}


CONSOLE_MAIL = "django.core.mail.backends.console.EmailBackend"


@contextmanager
def _mail_kept_in_memory():
    """The console e-mail backend (the embedded default) swapped for the in-memory one while
    the demo runs; a real backend (SMTP) is left alone: its alerts go out."""
    if settings.EMAIL_BACKEND != CONSOLE_MAIL:
        yield
        return
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    try:
        yield
    finally:
        settings.EMAIL_BACKEND = CONSOLE_MAIL


def _not_a_refusal(record: logging.LogRecord) -> bool:
    return getattr(record, "status_code", None) != 429


@contextmanager
def _refusals_not_logged():
    """The runaway loop's refusals are the point of the demo, summed up below: Django's line
    for each 429 ("Too Many Requests") is left out while it runs; every other line stays."""
    logger = logging.getLogger("django.request")
    logger.addFilter(_not_a_refusal)
    try:
        yield
    finally:
        logger.removeFilter(_not_a_refusal)


class Command(BaseCommand):
    help = (
        "Send realistic demo traffic through the gateway's HTTP API, in process: the eight "
        "features, repeated prompts the cache answers, an outage of one simulated provider "
        "(fallbacks, circuit openings) and a runaway research-agent loop that its hard budget "
        "stops, with the alerts that fire. Then drain "
        "the ledger and rebuild the rollups. --backfill-days also writes SYNTHETIC history "
        "(rows that never went through the gateway, request ids 'synthetic-…') so that charts "
        "over 30 days are not empty. Run `demosetup` first."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--requests", type=int, default=400)
        parser.add_argument("--backfill-days", type=int, default=0)
        parser.add_argument(
            "--outage-provider",
            default="sim-openai",
            help="simulated provider that fails during the middle phase",
        )
        parser.add_argument("--seed", type=int, default=7)

    def handle(
        self, *args, requests: int, backfill_days: int, outage_provider: str, seed: int, **options
    ) -> None:
        from gateway import ledger
        from gatewaysite.asgi import application

        callers, created = self._callers()
        started = timezone.now()
        outage = outage_provider if Provider.objects.filter(name=outage_provider).exists() else None
        runaway: Counter = Counter()
        try:
            # The alerts the run fires are recorded (BudgetAlert) and summed up below; with the
            # embedded console backend their e-mails would fill the first screen of `make run`.
            with _mail_kept_in_memory(), _refusals_not_logged():
                tally = asyncio.run(
                    demo.run(
                        app=application,
                        callers=callers,
                        requests=requests,
                        outage_provider=outage,
                        seed=seed,
                        runaway=runaway,
                    )
                )
        finally:
            ApiKey.objects.filter(id__in=created).update(revoked_at=timezone.now())
        drained = 0
        while batch := ledger.drain():
            drained += batch
        rollups.rebuild(started, timezone.now())
        self.stdout.write(
            f"Sent {requests} requests: {dict(sorted(tally.items()))}; "
            f"{drained} ledger rows drained and rolled up."
        )
        if runaway:
            self.stdout.write(
                f"Runaway {demo.RUNAWAY_FEATURE} loop: {runaway['served']} served, "
                f"{runaway['refused']} refused by its hard budget."
            )
        for alert in BudgetAlert.objects.filter(created_at__gte=started).select_related(
            "budget__team", "budget__feature"
        ):
            if alert.threshold >= 100 and alert.budget.hard:
                what = (
                    f"Budget exhausted: {alert.budget} is refusing requests ({alert.window} limit"
                )
            else:
                what = (
                    f"Budget alert: {alert.budget} reached {alert.threshold} % of its"
                    f" {alert.window} limit ("
                )
            sep = "; " if what.endswith("limit") else ""
            self.stdout.write(
                f"{what}{sep}{alert.channel} to {', '.join(alert.budget.emails) or 'its webhook'}:"
                f" {alert.status})."
            )
        # What beat's detector finds every minute (in `make run` the in-process beat does,
        # gateway/inprocbeat.py), found now: the incidents page shows the run at once.
        with _mail_kept_in_memory():
            found = incidents.detect()
            incident_alerts.send_pending()
        for incident in found:
            self.stdout.write(f"Incident: {incident.summary}")
        if backfill_days:
            written = backfill(days=backfill_days)
            self.stdout.write(f"Wrote {written} synthetic history rows over {backfill_days} days.")

    def _callers(self) -> tuple[list[demo.Caller], list[int]]:
        """A caller per team with features: the demo key for its team, else a temporary key
        (revoked when the run ends)."""
        demo_secret = DEMO_KEY_FILE.read_text().strip() if DEMO_KEY_FILE.exists() else ""
        demo_key = ApiKey.objects.filter(hashed_secret=ApiKey.hash_secret(demo_secret)).first()
        callers, created = [], []
        for team in Team.objects.filter(features__isnull=False).distinct():
            names = Feature.objects.filter(team=team).values_list("name", flat=True)
            features = tuple(n for n in names if n in KNOWN_FEATURES)
            if not features:
                continue
            if demo_key and demo_key.team_id == team.id and demo_key.is_active:
                secret = demo_secret
            else:
                key = ApiKey(team=team, name=KEY_NAME)
                secret = key.set_new_secret()
                key.save()
                created.append(key.id)
            runaway = demo.RUNAWAY_FEATURE in names
            callers.append(
                demo.Caller(team=team.name, secret=secret, features=features, runaway=runaway)
            )
        if not callers:
            raise CommandError("No team has features: run `python manage.py demosetup` first.")
        return callers, created
