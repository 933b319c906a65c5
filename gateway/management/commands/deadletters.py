"""List, replay or purge ledger records the database refused (gateway.models.DeadLetter).

python manage.py deadletters                  # the same as --list
python manage.py deadletters --replay 12      # write one into the ledger again
python manage.py deadletters --replay-all
python manage.py deadletters --purge 12 13    # delete for good (--purge-all: every one)
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from gateway import ledger
from gateway.models import DeadLetter


class Command(BaseCommand):
    help = "List, replay or purge ledger records the database refused (dead letters)."

    def add_arguments(self, parser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--list", action="store_true", help="List them (the default).")
        group.add_argument("--replay", type=int, nargs="+", metavar="ID", help="Replay these.")
        group.add_argument("--replay-all", action="store_true", help="Replay every one.")
        group.add_argument("--purge", type=int, nargs="+", metavar="ID", help="Delete these.")
        group.add_argument("--purge-all", action="store_true", help="Delete every one.")

    def handle(self, *args, **options) -> None:
        if options["replay"] or options["replay_all"]:
            self._replay(options["replay"])
        elif options["purge"] or options["purge_all"]:
            self._purge(options["purge"])
        else:
            self._list()

    def _list(self) -> None:
        letters = DeadLetter.objects.order_by("id")
        if not letters:
            self.stdout.write("No dead letters: every queued record reached the ledger.")
            return
        for d in letters:
            self.stdout.write(
                f"{d.id}\t{d.request_id or '-'}\tteam={d.team_id}\tattempts={d.attempts}\t"
                f"first={d.first_seen:%Y-%m-%d %H:%M:%S}\tlast={d.last_seen:%Y-%m-%d %H:%M:%S}"
                f"\t{d.error[:160]}"
            )

    def _replay(self, ids: list[int] | None) -> None:
        letters = list(DeadLetter.objects.filter(id__in=ids) if ids else DeadLetter.objects.all())
        missing = set(ids or ()) - {d.id for d in letters}
        if missing:
            raise CommandError(f"No dead letter with id {', '.join(map(str, sorted(missing)))}.")
        done = 0
        for d in letters:
            if ledger.replay(d):
                done += 1
                self.stdout.write(f"{d.id}: replayed into the ledger ({d.request_id})")
            else:
                d.refresh_from_db()
                self.stdout.write(f"{d.id}: refused again: {d.error[:200]}")
        self.stdout.write(f"{done} of {len(letters)} replayed.")

    def _purge(self, ids: list[int] | None) -> None:
        letters = DeadLetter.objects.filter(id__in=ids) if ids else DeadLetter.objects.all()
        count, _ = letters.delete()
        try:
            ledger._publish_dead_count()
        except Exception:  # the gauge catches up at the next set-aside
            pass
        self.stdout.write(f"{count} dead letter(s) purged.")
