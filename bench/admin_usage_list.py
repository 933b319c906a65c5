"""The admin's usage-record list at scale: the default page, an exact request-id search, a
team filter and the team autocomplete, timed through Django's test client (signed in as a
superuser) over a ledger of --records rows spread over the teams, features and keys that
bench/config_reload.py generated.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gateway_config_bench \\
        .venv/bin/python bench/admin_usage_list.py [--records 1000000]

Before/after: run it again with GATEWAY_CODE=/path/to/an/older/checkout to import that
checkout's gateway (its admin) over the same database.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("GATEWAY_CODE") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-not-secret")
os.environ.setdefault("ALLOWED_HOSTS", "testserver")
os.environ.setdefault("DEBUG", "1")  # static files from the source tree, no HTTPS redirect

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from gateway.models import Team, UsageRecord  # noqa: E402

# Teams and features were bulk-created in order (bench/config_reload.py): contiguous ids,
# FEATURES_PER_TEAM features per team.
FILL = """
INSERT INTO gateway_usagerecord (request_id, created_at, requested_model, served_model,
  provider, attempts, attempt_log, stream, input_tokens, output_tokens, cached_tokens,
  cache_write_tokens, cost_usd, saved_usd, estimated, unpriced, latency_ms, status,
  http_status, error_type, cache, team_id, feature_id, api_key_id, reserved_usd, endpoint)
SELECT 'bench-' || g, now() - (g %% 2592000) * interval '1 second', 'gpt-4o', 'gpt-4o', 'sim',
  1, '[]', false, 100, 50, 0, 0, 0.001, 0, false, false, 300, 'ok', 200, '', 'miss',
  %(team0)s + g %% %(teams)s, %(feature0)s + (g %% %(teams)s) * 4, NULL, 0, 'chat.completions'
FROM generate_series(%(first)s, %(last)s) AS g
"""


def fill(records: int) -> None:
    have = UsageRecord.objects.count()
    if have >= records:
        return
    from gateway.models import Feature

    teams = Team.objects.count()
    team0 = Team.objects.order_by("id").values_list("id", flat=True).first()
    feature0 = Feature.objects.order_by("id").values_list("id", flat=True).first()
    from django.utils import timezone

    from gateway import partitions

    now = timezone.now()
    partitions.cover(now - dt.timedelta(days=31), now + dt.timedelta(days=1))  # 30 days of rows
    started = time.monotonic()
    with connection.cursor() as cursor:
        for first in range(have + 1, records + 1, 200_000):
            last = min(first + 199_999, records)
            cursor.execute(
                FILL,
                {"first": first, "last": last, "teams": teams, "team0": team0,
                 "feature0": feature0},
            )  # fmt: skip
        cursor.execute("ANALYZE gateway_usagerecord")
    print(f"ledger filled to {records:,} rows in {time.monotonic() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not str(connection.settings_dict["NAME"]).endswith("config_bench"):
        sys.exit("use the config_bench database (bench/config_reload.py makes its teams)")
    fill(args.records)
    user = User.objects.filter(username="bench").first() or User.objects.create_superuser(
        "bench", "bench@example.com", "bench-password-not-secret"
    )
    client = Client()
    client.force_login(user)
    team = Team.objects.order_by("id")[min(100, Team.objects.count() - 1)]
    pages = {
        "default list": ("/admin/gateway/usagerecord/", {}),
        "search by request id": ("/admin/gateway/usagerecord/", {"q": "bench-123457"}),
        "filter by team": ("/admin/gateway/usagerecord/", {"team__id__exact": team.pk}),
    }
    print(f"code: {ROOT}; {UsageRecord.objects.count():,} ledger rows")
    print("| page | median ms | KB |")
    print("|---|---|---|")
    for name, (url, params) in pages.items():
        times, size = [], 0
        for _ in range(args.runs):
            started = time.perf_counter()
            response = client.get(url, params)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (name, response.status_code)
            size = len(response.content)
        print(f"| {name} | {statistics.median(times):,.0f} | {size / 1024:,.0f} |")


if __name__ == "__main__":
    main()
