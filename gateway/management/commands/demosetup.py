from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from gateway import configversion
from gateway.configfile import ConfigFileError, import_config, read_config_file
from gateway.models import ApiKey, Team

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "defaults" / "demo.yaml"
CURL = (
    'curl {base}/v1/chat/completions -H "Authorization: Bearer $KEY" '
    '-H "X-Gateway-Feature: chatbot" -H "Content-Type: application/json" '
    '-d \'{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Hello"}}]}}\''
)


class Command(BaseCommand):
    help = (
        "Set up the embedded demo (run after migrate; safe to run again): import the demo "
        "configuration, create the `admin` superuser if there is none (password from "
        "ADMIN_PASSWORD or generated and printed), and a demo API key for the first team, "
        "also written to var/demo-key.txt."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--config", default=str(DEMO_CONFIG), help="the demo YAML")
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="where the gateway serves, for the printed URLs",
        )

    def handle(self, *args, config: str, base_url: str, **options) -> None:
        try:
            data = read_config_file(config)
            report = import_config(data)
        except ConfigFileError as exc:
            raise CommandError(str(exc)) from None
        configversion.changed("*")  # every process reads it all again
        self.stdout.write(f"Imported {config}: " + "; ".join(report.lines()))
        self._ensure_admin()
        teams = data.get("teams") or []
        if not teams:
            raise CommandError(f"{config} names no team to create the demo key for")
        key = self._ensure_key(Team.objects.get(name=teams[0]["name"]))
        base = base_url.rstrip("/")
        self.stdout.write("")
        self.stdout.write(f"API:        {base}/v1")
        self.stdout.write(f"Admin:      {base}/admin/")
        self.stdout.write(f"Dashboards: {base}/reports/")
        self.stdout.write("Try it:")
        self.stdout.write(f"  export KEY={key}")
        self.stdout.write("  " + CURL.format(base=base))

    def _ensure_admin(self) -> None:
        users = get_user_model().objects
        saved = Path(settings.BASE_DIR) / "var" / "admin-password.txt"
        existing = list(users.filter(is_superuser=True).values_list("username", flat=True))
        if existing:
            known = saved.read_text().strip() if saved.exists() else "(password unchanged)"
            self.stdout.write(f"Admin login: {', '.join(existing)} / {known}")
            return
        from_env = os.environ.get("ADMIN_PASSWORD")
        password = from_env or secrets.token_urlsafe(12)
        users.create_superuser("admin", "admin@localhost", password)
        if from_env:
            self.stdout.write("Admin login: admin / (from ADMIN_PASSWORD)")
            return
        # A generated demo password is kept (owner-only) so every `make run` can show it.
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.touch(mode=0o600)
        saved.write_text(password + "\n")
        self.stdout.write(f"Admin login: admin / {password}")

    def _ensure_key(self, team: Team) -> str:
        """Reuse the key in var/demo-key.txt while it is still active: only its hash is in the
        database, so a lost file means a new key."""
        path = Path(settings.BASE_DIR) / "var" / "demo-key.txt"
        if path.exists():
            secret = path.read_text().strip()
            found = (
                ApiKey.objects.active()
                .filter(team=team, hashed_secret=ApiKey.hash_secret(secret))
                .exists()
            )
            if found:
                self.stdout.write(f"Demo key for team {team.name}: kept ({path})")
                return secret
        key = ApiKey(team=team, name="demo")
        secret = key.set_new_secret()
        key.save()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secret + "\n")
        self.stdout.write(f"Demo key for team {team.name}: created, written to {path}")
        return secret
