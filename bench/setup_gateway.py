"""Configure the gateway's database for the benchmarks, and print the keys as JSON.

    .venv/bin/python bench/setup_gateway.py setup --mock-port 9101 ...   # (re)create
    .venv/bin/python bench/setup_gateway.py setup --fleet 60              # and 60 more teams
    .venv/bin/python bench/setup_gateway.py status                        # budget counters

Everything it creates is named `bench*` and is recreated on every run (fresh budget ids mean
fresh Redis counters). Team `bench` has a feature, a huge hard budget (so reserve/settle run
on every request without refusing), and rate limits set high enough never to refuse (so the
rate-limit script runs). Team `bench-near` has a hard daily budget that the scenario
"budgets near their limit" exhausts mid-run. Providers are `openai`-kind and point at the
loopback mocks; their upstream key comes from the BENCH_API_KEY environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

import django  # noqa: E402

django.setup()

from budgets.models import Budget  # noqa: E402
from gateway.models import ApiKey, Feature, LanguageModel, Provider, Team  # noqa: E402

HIGH_LIMIT = 2_000_000_000  # rate limits that run but never refuse
PRICE = Decimal("10")  # USD per Mtok in and out: 22 tokens ≈ $0.00022 per mock answer
NEAR_LIMIT_USD = Decimal("0.01")  # bench-near: ~45 mock answers, then refusals


def _team(name: str, *, budget_usd: Decimal, thresholds: list[int]) -> tuple[Team, str]:
    Team.objects.filter(name=name).delete()
    team = Team.objects.create(
        name=name, rpm_limit=HIGH_LIMIT, tpm_limit=HIGH_LIMIT, budget_fail_open=False
    )
    Feature.objects.create(team=team, name="bench", default_cache_ttl=0)
    Budget.objects.create(
        team=team,
        scope=Budget.Scope.TEAM,
        daily_limit_usd=budget_usd,
        monthly_limit_usd=budget_usd,
        alert_thresholds=thresholds,
        hard=True,
    )
    key = ApiKey(team=team, name="bench", rpm_limit=HIGH_LIMIT, tpm_limit=HIGH_LIMIT)
    secret = key.set_new_secret()
    key.save()
    return team, secret


def _model(name: str, port: int, kind: str = "openai", **fields) -> None:
    provider, _ = Provider.objects.update_or_create(
        name=f"mock-{name}",
        defaults={
            "kind": kind,
            "base_url": f"http://127.0.0.1:{port}" + ("/v1" if kind != "anthropic" else ""),
            "api_key_env": "BENCH_API_KEY",
            "read_timeout": 30.0,
            "enabled": True,
        },
    )
    LanguageModel.objects.filter(name=f"bench-{name}").delete()
    LanguageModel.objects.create(
        name=f"bench-{name}",
        provider=provider,
        upstream_id=f"mock-{name}",
        input_per_mtok=PRICE,
        output_per_mtok=PRICE,
        context_window=128_000,
        max_output_tokens=4096,
        **fields,
    )


def setup(ports: dict[str, int], fleet: int = 0) -> dict[str, Any]:
    for name, port in ports.items():
        _model(name, port)
    _model("claude", ports["fast"], kind="anthropic")
    _model("embed", ports["fast"], mode="embedding", dimensions=1536)  # /v1/embeddings
    # Thresholds empty on the big budget: no alert task is ever enqueued by the main runs.
    _, key = _team("bench", budget_usd=Decimal("1000000"), thresholds=[])
    _, near_key = _team("bench-near", budget_usd=NEAR_LIMIT_USD, thresholds=[50, 80, 100])
    # A fleet of teams like `bench`, whose slots spread over a cluster's nodes.
    Team.objects.filter(name__startswith="bench-fleet-").delete()
    keys = [
        _team(f"bench-fleet-{i}", budget_usd=Decimal("1000000"), thresholds=[])[1]
        for i in range(fleet)
    ]
    return {"key": key, "near_key": near_key, "fleet": keys}


def status(team_name: str) -> list[dict[str, str]]:
    from budgets.services import budget_status
    from gateway.money import units_to_usd
    from gateway.runtime import aredis
    from gateway.snapshot import store

    team = Team.objects.get(name=team_name)
    snap = store().snapshot_sync().teams[team.id]

    async def read():
        return await budget_status(redis=aredis(), budgets=list(snap.budgets))

    rows = asyncio.run(read())
    return [
        {
            "window": r.slot.window.name,
            "limit_usd": str(units_to_usd(r.slot.limit_units or 0)),
            "spent_usd": str(units_to_usd(r.spent)),
            "reserved_usd": str(units_to_usd(r.reserved)),
        }
        for r in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup")
    for name, default in (("fast", 9101), ("slow", 9102), ("stream", 9103), ("1s", 9104)):
        s.add_argument(f"--{name}-port", type=int, default=default)
    s.add_argument("--fleet", type=int, default=0, help="teams bench-fleet-0..N-1, one key each")
    st = sub.add_parser("status")
    st.add_argument("--team", default="bench-near")
    args = parser.parse_args()
    if args.command == "setup":
        ports = {n: getattr(args, f"{n}_port") for n in ("fast", "slow", "stream", "1s")}
        print(json.dumps(setup(ports, args.fleet)))
    else:
        print(json.dumps(status(args.team)))


if __name__ == "__main__":
    main()
