from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from gateway.models import ApiKey, Team


class Command(BaseCommand):
    help = (
        "Create an API key for a team (optionally pinned to one feature). The key is printed "
        "once, alone on the last line; only its hash is stored."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--team", required=True, help="team name")
        parser.add_argument("--feature", help="pin the key to this feature of the team")
        parser.add_argument("--name", default="", help="a label, e.g. who uses the key")
        parser.add_argument("--expires-days", type=int, help="expire after this many days")

    def handle(
        self, *args, team: str, feature: str | None, name: str, expires_days: int | None, **options
    ) -> None:
        team_obj = Team.objects.filter(name=team).first()
        if team_obj is None:
            raise CommandError(f"no team named {team!r} (teams: {_names(Team.objects)})")
        feature_obj = None
        if feature:
            feature_obj = team_obj.features.filter(name=feature).first()
            if feature_obj is None:
                raise CommandError(
                    f"team {team!r} has no feature {feature!r} "
                    f"(features: {_names(team_obj.features)})"
                )
        if expires_days is not None and expires_days <= 0:
            raise CommandError("--expires-days must be a positive number of days")
        key = ApiKey(team=team_obj, feature=feature_obj, name=name)
        if expires_days:
            key.expires_at = timezone.now() + timedelta(days=expires_days)
        secret = key.set_new_secret()
        try:
            key.full_clean()
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        key.save()
        scope = f"{team}/{feature}" if feature else f"{team} (any feature)"
        expiry = f", expires {key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at else ""
        self.stdout.write(
            f"Created key {key.prefix}… for {scope}{expiry}. It is shown once; store it now:"
        )
        self.stdout.write(secret)


def _names(qs) -> str:
    return ", ".join(qs.values_list("name", flat=True)) or "none"
