from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from gateway.configfile import dump_config, export_config


class Command(BaseCommand):
    help = (
        "Write providers, models, routes, teams, features and budgets as YAML (the format "
        "importconfig reads), to FILE or standard output. Secrets are never included."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", nargs="?", help="where to write (default: standard output)")

    def handle(self, *args, file: str | None, **options) -> None:
        text = dump_config(export_config())
        if file is None:
            self.stdout.write(text, ending="")
            return
        try:
            Path(file).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {file}: {exc.strerror}") from None
        self.stderr.write(f"Wrote {file}.")
