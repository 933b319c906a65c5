"""Config reload cost at scale: what each worker's config refresh costs with 5,000 teams,
20,000 features, 10,000 budgets and 100,000 keys, before (a full reload of every row every
`CONFIG_TTL_S`) and after the config version (gateway/configversion.py: nothing read again
when nothing changed, only the changed key or team when something did), side by side.

    createdb -h 127.0.0.1 -U postgres gateway_config_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gateway_config_bench \\
        .venv/bin/python bench/config_reload.py [--teams 5000 --keys 100000] [--regenerate]
        [--write bench/CONFIG.md]

The database must be the benchmark's own (its name must end in "config_bench"): its teams,
features, budgets and keys are replaced when their counts differ from the ones asked for (or
with --regenerate). Rows are made with bulk_create (about a minute for 100,000 keys). The
config version lives in REDIS_URL if set, else in the in-process stand-in.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-not-secret")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from budgets.models import Budget  # noqa: E402
from gateway import configstore, configversion  # noqa: E402
from gateway import snapshot as snapshots  # noqa: E402
from gateway.models import ApiKey, Feature, LanguageModel, Provider, Team  # noqa: E402

FEATURES_PER_TEAM = 4
BUDGETS_PER_TEAM = 2


def generate(teams: int, keys: int) -> None:
    started = time.monotonic()
    with transaction.atomic():
        ApiKey.objects.all().delete()
        Budget.objects.all().delete()
        Feature.objects.all().delete()
        Team.objects.all().delete()
        made = Team.objects.bulk_create(
            [Team(name=f"team-{i:05}", timezone="UTC") for i in range(teams)], batch_size=2000
        )
        features = Feature.objects.bulk_create(
            [Feature(team=t, name=f"feature-{j}") for t in made for j in range(FEATURES_PER_TEAM)],
            batch_size=5000,
        )
        Budget.objects.bulk_create(
            [
                Budget(team=f.team, feature=f, scope=Budget.Scope.FEATURE, daily_limit_usd=10)
                for f in features[: teams * BUDGETS_PER_TEAM]
            ],
            batch_size=5000,
        )
        rows = []
        for i in range(keys):
            team = made[i % teams]
            key = ApiKey(team=team, name=f"key-{i}")
            key.set_new_secret()
            rows.append(key)
        ApiKey.objects.bulk_create(rows, batch_size=5000)
        provider, _ = Provider.objects.get_or_create(name="sim", defaults={"kind": "simulated"})
        for name in ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4"):
            LanguageModel.objects.get_or_create(
                name=name, defaults={"provider": provider, "upstream_id": name}
            )
    print(f"generated {teams} teams, {keys} keys in {time.monotonic() - started:.1f} s")


def timed(fn, runs: int, setup=lambda: None) -> tuple[float, float, object]:
    """Median wall and CPU milliseconds of `runs` calls (after an untimed `setup` each), and
    the last result."""
    walls, cpus, result = [], [], None
    for _ in range(runs):
        setup()
        wall, cpu = time.perf_counter(), time.thread_time()
        result = fn()
        cpus.append((time.thread_time() - cpu) * 1000)
        walls.append((time.perf_counter() - wall) * 1000)
    return statistics.median(walls), statistics.median(cpus), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teams", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--write", help="write the figures (markdown) to this file")
    args = parser.parse_args()
    name = connection.settings_dict["NAME"]
    if not str(name).endswith("config_bench"):
        sys.exit(f"refusing to replace the config of {name!r}: use a database *config_bench")
    call_command("migrate", verbosity=0)
    if args.regenerate or (Team.objects.count(), ApiKey.objects.count()) != (
        args.teams,
        args.keys,
    ):
        generate(args.teams, args.keys)
    rows = {
        "teams": Team.objects.count(),
        "features": Feature.objects.count(),
        "budgets": Budget.objects.count(),
        "keys": ApiKey.objects.count(),
    }
    ttl = 5.0
    version = configversion.read()
    full_ms, full_cpu, base = timed(lambda: snapshots.load_snapshot(version), args.runs)
    same_ms, same_cpu, _ = timed(lambda: configstore.load(base, set(), set(), False), args.runs)

    key = ApiKey.objects.order_by("?").first()
    team = Team.objects.order_by("?").first()

    def revoke():
        ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
        configversion.publish({f"k:{key.pk}"})

    def edit_team():
        Team.objects.filter(pk=team.pk).update(rpm_limit=100)
        configversion.publish({f"t:{team.pk}"})

    def rebase():  # the worker's copy is as of the version before the change just published
        nonlocal base
        epoch, number = configversion.read()
        base = dataclasses.replace(base, version=(epoch, number - 1))

    # The refresh of a worker whose copy is `base` and which hears of one more change.
    def refresh():
        return configstore.load(base, set(), set(), False)

    base = configstore.load(base, set(), set(), False)
    key_ms, key_cpu, revoked = timed(refresh, args.runs, setup=lambda: (revoke(), rebase()))
    assert revoked.keys[key.hashed_secret].revoked and revoked.teams is base.teams
    team_ms, team_cpu, edited = timed(refresh, args.runs, setup=lambda: (edit_team(), rebase()))
    assert edited.teams[team.pk].rpm_limit == 100
    hashes = list(ApiKey.objects.order_by("?").values_list("hashed_secret", flat=True)[:100])
    one_ms, one_cpu, _ = timed(
        lambda: [snapshots._load_keys(snapshots.Q(hashed_secret=h)) for h in hashes], args.runs
    )
    batch_ms, batch_cpu, _ = timed(
        lambda: snapshots._load_keys(snapshots.Q(hashed_secret__in=hashes)), args.runs
    )
    engine = connection.vendor
    lines = [
        f"Config reload at scale ({engine}; {rows['teams']:,} teams, {rows['features']:,} "
        f"features, {rows['budgets']:,} budgets, {rows['keys']:,} keys), median of "
        f"{args.runs}, `bench/config_reload.py`:",
        "",
        "| refresh | wall ms | CPU ms | share of a core at one refresh per 5 s |",
        "|---|---|---|---|",
        f"| before: full reload every {ttl:g} s (every row) | {full_ms:,.1f} | {full_cpu:,.1f} "
        f"| {full_cpu / (ttl * 1000):.1%} |",
        f"| after: version unchanged (providers, models, routes only) | {same_ms:,.1f} | "
        f"{same_cpu:,.1f} | {same_cpu / (ttl * 1000):.2%} |",
        f"| after: one key revoked (that key only) | {key_ms:,.1f} | {key_cpu:,.1f} | — |",
        f"| after: one team edited (that team only) | {team_ms:,.1f} | {team_cpu:,.1f} | — |",
        f"| 100 unknown keys, one query each | {one_ms:,.1f} | {one_cpu:,.1f} | — |",
        f"| 100 unknown keys, one batched query | {batch_ms:,.1f} | {batch_cpu:,.1f} | — |",
        "",
        f"Removed per worker: {full_cpu - same_cpu:,.0f} ms of CPU every {ttl:g} s "
        f"({(full_cpu - same_cpu) / (ttl * 1000):.1%} of a core), in the thread that shares "
        "the GIL with the event loop.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        Path(args.write).write_text("# Config reload cost\n\n" + text + "\n")


if __name__ == "__main__":
    main()
