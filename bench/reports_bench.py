"""Report pages at scale: a million ledger rows in PostgreSQL, rollups rebuilt from them, then
every report page rendered through Django's test client and timed.

    createdb -h 127.0.0.1 -U postgres gateway_reports_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gateway_reports_bench \
        .venv/bin/python bench/reports_bench.py [--records 1000000] [--write bench/REPORTS.md]

The database must be the benchmark's own (its name must end in "reports_bench"): its ledger
and rollups are emptied first. It is not `gateway_bench`, which the gateway's load
benchmark uses at the same time. Rows are made
by one `INSERT … SELECT` over `generate_series` per 250,000 rows. Their token counts come from
a small table of request shapes whose costs were computed in Python with gateway.money, so
SQL never does money arithmetic. Traffic: 5 teams × 8 features over 90 days; each feature
sends 80 % of its requests to its usual model and 20 % to a second one; 25 % cache hits,
1.5 % errors, 3 % fallbacks, log-normal latencies.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-not-secret")
os.environ.setdefault("ALLOWED_HOSTS", "testserver")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from budgets.models import Budget  # noqa: E402
from gateway.models import Feature, LanguageModel, Provider, Team  # noqa: E402
from gateway.money import Prices, cost_of  # noqa: E402
from gateway.providers.base import Usage  # noqa: E402
from reports import rollups  # noqa: E402
from reports.models import HourlyRollup  # noqa: E402

DAYS = 90
CHUNK = 250_000
MODELS = {  # name: (provider, input $/Mtok, output $/Mtok)
    "gpt-4o-mini": ("sim-openai", "0.15", "0.6"),
    "gpt-4o": ("sim-openai", "2.5", "10"),
    "claude-3-5-haiku": ("sim-anthropic", "0.8", "4"),
    "claude-sonnet-4": ("sim-anthropic", "3", "15"),
    "llama-3.1-8b": ("sim-local", "0.03", "0.05"),
}
FEATURES = {  # feature: (usual model, second model)
    "chatbot": ("gpt-4o", "claude-sonnet-4"),
    "summarization": ("gpt-4o-mini", "claude-3-5-haiku"),
    "code-generation": ("claude-sonnet-4", "gpt-4o"),
    "moderation": ("llama-3.1-8b", "gpt-4o-mini"),
    "search": ("gpt-4o-mini", "claude-3-5-haiku"),
    "classification": ("llama-3.1-8b", "gpt-4o-mini"),
    "translation": ("gpt-4o-mini", "gpt-4o"),
    "data-extraction": ("claude-3-5-haiku", "gpt-4o-mini"),
}
TEAMS = ["product", "platform", "support", "growth", "research"]
SIZES = [
    (120, 40),
    (300, 80),
    (600, 150),
    (900, 250),
    (1500, 400),
    (2500, 600),
    (4000, 900),
    (800, 20),
    (200, 300),
    (3000, 1200),
]
RANGES = ["48h", "7d", "30d", "90d"]
PAGES = [
    "/reports/",
    "/reports/spend/?by=team",
    "/reports/spend/?by=model",
    "/reports/cache/",
    "/reports/providers/",
    "/reports/models/",
    "/reports/api/overview",
    "/reports/spend.csv",
]


def configure() -> list[tuple]:
    """Teams, features, models and budgets; returns the request shapes (one per feature,
    model and size, the usual model listed four times so that it gets 80 %)."""
    for name in {p for p, _, _ in MODELS.values()}:
        Provider.objects.get_or_create(name=name, defaults={"kind": "simulated"})
    for name, (provider, inp, out) in MODELS.items():
        LanguageModel.objects.update_or_create(
            name=name,
            defaults={
                "provider": Provider.objects.get(name=provider),
                "upstream_id": name,
                "input_per_mtok": inp,
                "output_per_mtok": out,
            },
        )
    shapes = []
    for team_name in TEAMS:
        team, _ = Team.objects.get_or_create(name=team_name)
        Budget.objects.get_or_create(
            team=team, scope="team", defaults={"daily_limit_usd": 50, "monthly_limit_usd": 1000}
        )
        for feature_name, (usual, second) in FEATURES.items():
            feature, _ = Feature.objects.get_or_create(team=team, name=feature_name)
            for model_name in (usual, usual, usual, usual, second):
                model = LanguageModel.objects.get(name=model_name)
                prices = Prices(model.input_per_mtok, model.output_per_mtok)
                for inp, out in SIZES:
                    cost = cost_of(Usage(inp, out), prices).usd
                    shapes.append(
                        (
                            team.id,
                            feature.id,
                            model_name,
                            MODELS[model_name][0],
                            inp,
                            out,
                            cost,
                            "auto" if feature_name == "chatbot" else model_name,
                        )
                    )
    return shapes


INSERT = """
INSERT INTO gateway_usagerecord (request_id, created_at, team_id, feature_id, api_key_id,
    requested_model, served_model, provider, attempts, attempt_log, stream, input_tokens,
    output_tokens, cached_tokens, cache_write_tokens, cost_usd, saved_usd, estimated, unpriced,
    latency_ms, status, http_status, error_type, cache, content, reserved_usd, endpoint)
SELECT 'bench-' || x.g, %(end)s - x.r5 * interval '90 days', s.team_id, s.feature_id, NULL,
    s.requested, s.served_model, s.provider,
    CASE WHEN x.r2 < 0.25 THEN 0 WHEN x.r2 < 0.295 THEN 2 ELSE 1 END, '[]', false,
    CASE WHEN x.r2 BETWEEN 0.25 AND 0.265 THEN 0 ELSE s.input_tokens END,
    CASE WHEN x.r2 BETWEEN 0.25 AND 0.265 THEN 0 ELSE s.output_tokens END, 0, 0,
    CASE WHEN x.r2 < 0.265 THEN 0 ELSE s.cost END, CASE WHEN x.r2 < 0.25 THEN s.cost ELSE 0 END,
    false, false,
    CASE WHEN x.r2 < 0.25 THEN 3
         ELSE least(60000, exp(6.2 + 0.5 * sqrt(-2 * ln(x.r3)) * cos(2 * pi() * x.r4)))::int END,
    CASE WHEN x.r2 BETWEEN 0.25 AND 0.265 THEN 'error' ELSE 'ok' END,
    CASE WHEN x.r2 BETWEEN 0.25 AND 0.265 THEN 503 ELSE 200 END, '',
    CASE WHEN x.r2 < 0.25 THEN 'hit' ELSE 'miss' END, NULL, 0, 'chat.completions'
FROM (SELECT g, random() AS r1, random() AS r2, 1 - random() AS r3, random() AS r4,
             random() AS r5
      FROM generate_series(%(first)s, %(last)s) AS g) AS x
JOIN bench_shape s ON s.id = floor(x.r1 * %(shapes)s)::int
"""


def generate(records: int, shapes: list[tuple], end: dt.datetime) -> None:
    from gateway import partitions

    partitions.cover(end - dt.timedelta(days=DAYS + 1), end + dt.timedelta(days=1))
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE gateway_usagerecord, reports_hourlyrollup")
        cursor.execute("DROP TABLE IF EXISTS bench_shape")
        cursor.execute(
            "CREATE TABLE bench_shape (id int PRIMARY KEY, team_id bigint, feature_id bigint, "
            "served_model text, provider text, input_tokens int, output_tokens int, "
            "cost numeric(20, 10), requested text)"
        )
        cursor.executemany(
            "INSERT INTO bench_shape VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(i, *shape) for i, shape in enumerate(shapes)],
        )
        for first in range(1, records + 1, CHUNK):
            last = min(records, first + CHUNK - 1)
            with transaction.atomic():
                cursor.execute(
                    INSERT, {"first": first, "last": last, "end": end, "shapes": len(shapes)}
                )
            print(f"  {last:,} rows", flush=True)
        cursor.execute("DROP TABLE bench_shape")
        cursor.execute("ANALYZE gateway_usagerecord")


def time_pages(client: Client, repeats: int) -> list[tuple[str, str, float, float, int]]:
    results = []
    for range_key in RANGES:
        for page in PAGES:
            url = f"{page}{'&' if '?' in page else '?'}range={range_key}"
            timings, size = [], 0
            for _ in range(repeats):
                started = time.perf_counter()
                response = client.get(url, secure=True)
                timings.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (url, response.status_code)
                size = len(response.content)
            results.append((range_key, page, statistics.median(timings), max(timings), size))
            print(
                f"  {range_key:>4} {page:<28} median {results[-1][2]:7.1f} ms  "
                f"max {results[-1][3]:7.1f} ms",
                flush=True,
            )
    return results


def markdown(records: int, insert_s: float, rebuild_s: float, rollup_rows: int, results) -> str:
    lines = [
        "# Report pages at a million ledger rows",
        "",
        "Produced by `bench/reports_bench.py` (see its docstring for the traffic it generates)",
        f"against PostgreSQL {connection.pg_version // 10000} on this machine, "
        f"{timezone.now():%Y-%m-%d}.",
        "",
        f"- Ledger rows: {records:,} over {DAYS} days; generated in {insert_s:.1f} s.",
        f"- Rollups rebuilt from the ledger (`reports.rollups.rebuild`): {rollup_rows:,} hourly "
        f"rows in {rebuild_s:.1f} s ({records / rebuild_s:,.0f} ledger rows/s). In production the "
        "drainer keeps them current batch by batch; a full rebuild is only for repairs.",
        "- Each page: Django test client, full render (template and JSON), 5 runs after a warm-up; "
        "the pages read rollups and budgets only, never the ledger. Ranges of days read daily "
        "rollups, 48 h reads hourly ones.",
        f"- Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} when the run "
        "ended (shared with other work, so these are pessimistic).",
        "",
        "| range | page | median ms | max ms | bytes |",
        "|---|---|---:|---:|---:|",
    ]
    for range_key, page, median, worst, size in results:
        lines.append(f"| {range_key} | `{page}` | {median:.1f} | {worst:.1f} | {size:,} |")
    lines += [
        "",
        f"Slowest median: {max(r[2] for r in results):.1f} ms; "
        f"slowest single render: {max(r[3] for r in results):.1f} ms.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", help="write the results as markdown to this file")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("Set DATABASE_URL to a PostgreSQL database made for the benchmark.")
    if not connection.settings_dict["NAME"].endswith("reports_bench"):
        sys.exit("The benchmark empties the ledger: use a database named like *reports_bench.")
    call_command("migrate", verbosity=0)
    shapes = configure()
    end = timezone.now()
    print(f"Generating {args.records:,} ledger rows…", flush=True)
    started = time.perf_counter()
    generate(args.records, shapes, end)
    insert_s = time.perf_counter() - started
    print("Rebuilding rollups…", flush=True)
    started = time.perf_counter()
    rollup_rows = rollups.rebuild(end - dt.timedelta(days=DAYS, hours=1), end)
    rebuild_s = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE reports_hourlyrollup")
    print(f"  {rollup_rows:,} rollup rows in {rebuild_s:.1f} s", flush=True)
    user, _ = User.objects.get_or_create(username="bench-manager", defaults={"is_staff": True})
    client = Client()
    client.force_login(user)
    client.get("/reports/", secure=True)  # warm-up: imports, template loading
    results = time_pages(client, args.repeats)
    assert HourlyRollup.objects.count() == rollup_rows
    text = markdown(args.records, insert_s, rebuild_s, rollup_rows, results)
    if args.write:
        Path(args.write).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
