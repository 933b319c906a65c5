"""python manage.py whatif --config candidate.yaml [--since 30d] [--team T]
[--format table|csv|json]: what the ledger's traffic would have cost under a candidate
policy (reports/whatif.py says how it is replayed, and what it assumes)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from gateway.csvexport import csv_writer
from gateway.models import Team
from reports.candidate import CandidateError, candidate_from_data
from reports.filters import FilterError, since_window
from reports.templatetags.report_format import usd
from reports.whatif import replay


class Command(BaseCommand):
    help = (
        "Replay past ledger traffic under a candidate policy (a YAML file with `routes` as in "
        "the configuration file, and optionally `baseline`, `models` prices, `priorities` "
        "and `token_ratios`) and print its cost per team and feature, the model shares, and "
        "the difference to what was spent and to the baseline."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--config", required=True, help="the candidate policy (YAML)")
        parser.add_argument("--since", default="30d", help="how far back: 30d, 7d, 12h...")
        parser.add_argument("--team", help="one team's traffic only")
        parser.add_argument("--format", choices=["table", "csv", "json"], default="table")

    def handle(self, *args, config: str, since: str, team: str | None, format: str, **o):
        try:
            data = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
            candidate = candidate_from_data(data)
        except OSError as exc:
            raise CommandError(f"cannot read {config}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise CommandError(f"{config} is not valid YAML: {exc}") from None
        except CandidateError as exc:
            raise CommandError(f"{config}: {exc}") from None
        team_ids = None
        if team:
            team_ids = frozenset(Team.objects.filter(name=team).values_list("id", flat=True))
            if not team_ids:
                raise CommandError(f"--team: no team named {team!r}")
        try:
            start, end = since_window(since, timezone.now())
        except FilterError as exc:
            raise CommandError(f"--{exc.message}") from None
        result = replay(start=start, end=end, team_ids=team_ids, candidate=candidate)
        {"table": self.table, "csv": self.csv, "json": self.json}[format](result)

    def json(self, result: dict) -> None:
        self.stdout.write(json.dumps(result, default=str, indent=2))

    def csv(self, result: dict) -> None:
        writer = csv_writer(self.stdout)
        columns = [
            "requests",
            "actual_usd",
            "candidate_usd",
            "baseline_usd",
            "vs_actual_usd",
            "vs_baseline_usd",
            "unpriced",
            "no_baseline",
        ]
        writer.writerow(["team", "feature", *columns])
        for row in [*result["rows"], {"team": "(total)", "feature": "", **result["total"]}]:
            writer.writerow([row["team"], row["feature"], *(row[c] for c in columns)])

    def table(self, result: dict) -> None:
        w = self.stdout.write
        w(f"What-if over {result['start']:%Y-%m-%d %H:%M} → {result['end']:%Y-%m-%d %H:%M} UTC")
        header = f"{'team/feature':<32} {'requests':>9} {'spent':>12} {'candidate':>12} "
        w(header + f"{'baseline':>12} {'vs spent':>12} {'vs baseline':>12}")
        for row in [*result["rows"], {"feature": "TOTAL", **result["total"]}]:
            w(
                f"{row['feature']:<32} {row['requests']:>9,} {usd(row['actual_usd']):>12} "
                f"{usd(row['candidate_usd']):>12} {usd(row['baseline_usd']):>12} "
                f"{usd(row['vs_actual_usd']):>12} {usd(row['vs_baseline_usd']):>12}"
            )
        if result["total"]["no_baseline"]:
            w(
                f"({result['total']['no_baseline']:,} requests have no priced baseline: none is "
                "set for their team, or its model has no price; baseline figures show —.)"
            )
        w("\nModel shares under the candidate:")
        for m in result["models"]:
            w(f"  {m['model']:<28} {m['requests']:>9,}  {m['share'] * 100:5.1f} %")
        w("\nAssumptions:")
        for caveat in result["caveats"]:
            w(f"  - {caveat}")
