"""python manage.py rebuildrollups [--since 90d]: bring the hourly and daily rollups back in
step with the ledger (idempotent), hour by hour, while the gateway runs (the drain does not
wait for it; see reports/rollups.py); days the ledger no longer holds are left as they are.
Run it once after upgrading to reports 0006 (savings): rollups written before it lack the
token counts the savings are repriced from."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from reports import rollups
from reports.filters import FilterError, since_window


class Command(BaseCommand):
    help = "Recompute the rollups of the last N days (or hours) from the ledger."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", default="90d", help="how far back: 90d, 400d, 12h...")

    def handle(self, *args, since: str, **options) -> None:
        try:
            start, end = since_window(since, timezone.now())
        except FilterError as exc:
            raise CommandError(f"--{exc.message}") from None
        written = rollups.rebuild(start, end)
        self.stdout.write(f"{written} hourly rollups repaired from {start:%Y-%m-%d %H:%M} UTC")
