from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from gateway import configversion
from gateway.configfile.fields import dump_decimal
from gateway.priceimport import PriceReport, PriceTableError, import_prices, load_price_table


class Command(BaseCommand):
    help = (
        "Update the prices, context windows and output limits of known models from a price "
        "table in the community format (model_prices_and_context_window.json), matching each "
        "model by its upstream id (or provider/upstream id). Reports every change."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="the JSON price table")
        parser.add_argument("--dry-run", action="store_true", help="report, save nothing")

    def handle(self, *args, file: str, dry_run: bool, **options) -> None:
        try:
            table = load_price_table(file)
        except PriceTableError as exc:
            raise CommandError(str(exc)) from None
        report = import_prices(table=table, dry_run=dry_run)
        self._print(report)
        n = len(report.updates)
        if dry_run:
            self.stdout.write(f"Dry run: {n} model(s) would change; nothing was saved.")
        else:
            configversion.changed("*")  # every process reads it all again
            self.stdout.write(self.style.SUCCESS(f"Updated {n} model(s)."))

    def _print(self, report: PriceReport) -> None:
        for update in report.updates:
            self.stdout.write(f"{update.model.name} (table entry {update.table_key}):")
            for c in update.changes:
                self.stdout.write(f"  {c.attr}: {_show(c.old)} → {_show(c.new)}")
        if report.unchanged:
            self.stdout.write(f"Unchanged: {', '.join(report.unchanged)}")
        if report.not_found:
            self.stdout.write(f"Not in the table (left as they are): {', '.join(report.not_found)}")
        for warning in report.warnings:
            self.stderr.write(self.style.WARNING(warning))


def _show(value) -> str:
    if value is None:
        return "unset"
    return str(value) if isinstance(value, int) else str(dump_decimal(value))
