"""python manage.py createmanager USERNAME --teams T1,T2 [--email E] [--noinput]"""

from __future__ import annotations

import getpass
import os

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from gateway.models import Team
from reports.access import MANAGERS_GROUP
from reports.models import ManagerScope

PASSWORD_ENV = "MANAGER_PASSWORD"
PROMPTS = 3


class Command(BaseCommand):
    help = (
        "Create a manager: a user who signs in at /reports/login/ and reads the dashboards of "
        "the given teams only (not staff: no admin). The password is asked twice, or with "
        f"--noinput taken from the {PASSWORD_ENV} environment variable. Teams can be changed "
        "later in the admin (the user's Report access)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--teams",
            default="",
            help="comma-separated team names the manager may see (none: an empty dashboard)",
        )
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help=f"do not prompt: the password comes from ${PASSWORD_ENV}",
        )

    def handle(self, *args, username: str, teams: str, email: str, interactive: bool, **options):
        users = get_user_model().objects
        username = username.strip()
        if not username:
            raise CommandError("The username must not be empty.")
        if users.filter(username=username).exists():
            raise CommandError(
                f'A user named "{username}" already exists; change its teams in the admin '
                "(Users → the user → Report access)."
            )
        chosen = self._teams(teams)
        user = get_user_model()(username=username, email=email)
        password = self._password(user, interactive)
        with transaction.atomic():
            user.set_password(password)
            user.save()
            user.groups.add(Group.objects.get_or_create(name=MANAGERS_GROUP)[0])
            ManagerScope.objects.create(user=user).teams.set(chosen)
        names = ", ".join(t.name for t in chosen) or "none (they will see an empty dashboard)"
        self.stdout.write(f"Manager {username} created; teams: {names}. Sign in at /reports/login/")

    def _teams(self, raw: str) -> list[Team]:
        names = list(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
        found = {t.name: t for t in Team.objects.filter(name__in=names)}
        unknown = [n for n in names if n not in found]
        if unknown:
            known = ", ".join(Team.objects.order_by("name").values_list("name", flat=True))
            raise CommandError(
                f"Unknown team{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}. "
                f"Known teams: {known or '(none yet)'}."
            )
        return [found[n] for n in names]

    def _password(self, user, interactive: bool) -> str:
        if not interactive:
            password = os.environ.get(PASSWORD_ENV, "")
            if not password:
                raise CommandError(
                    f"--noinput needs the password in the {PASSWORD_ENV} environment variable."
                )
            try:
                validate_password(password, user)
            except ValidationError as exc:
                raise CommandError(f"{PASSWORD_ENV}: {' '.join(exc.messages)}") from None
            return password
        for _ in range(PROMPTS):
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                self.stderr.write("The two passwords differ; try again.")
                continue
            if not password:
                self.stderr.write("The password must not be empty.")
                continue
            try:
                validate_password(password, user)
            except ValidationError as exc:
                self.stderr.write(" ".join(exc.messages))
                continue
            return password
        raise CommandError(f"No valid password after {PROMPTS} attempts; nothing was created.")
