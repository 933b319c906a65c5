from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from gateway import configversion, fallbackcheck
from gateway.configfile import ConfigFileError, import_config, read_config_file


class Command(BaseCommand):
    help = (
        "Create or update providers, models, routes, teams, features and budgets from a YAML "
        "file, in one transaction. Records the file does not name are left as they are."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="YAML configuration (see docs/configuration.md)")

    def handle(self, *args, file: str, **options) -> None:
        try:
            report = import_config(read_config_file(file))
        except ConfigFileError as exc:
            raise CommandError(f"{exc}\nNothing was imported.") from None
        configversion.changed("*")  # every process reads it all again
        for line in report.lines():
            self.stdout.write(line)
        for line in fallbackcheck.warnings():
            self.stdout.write(self.style.WARNING(f"Warning: {line}"))
        self.stdout.write(self.style.SUCCESS(f"Imported {file}."))
