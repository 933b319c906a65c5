"""What-if replay at scale (issue 20: "30 days of 1 M ledger rows in under 10 s"): a million
ledger rows over 30 days in PostgreSQL, then `reports.whatif.replay` over those 30 days for
two candidates (everything on one model; low-priority features moved), timed.

    createdb -h 127.0.0.1 -U postgres gw_savings20_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gw_savings20_bench \
        .venv/bin/python bench/whatif_bench.py [--records 1000000] [--repeats 3]

The database must be the benchmark's own (its name must end in "bench"): its ledger is
emptied first. Rows are made as bench/reports_bench.py makes them (its request shapes and
its INSERT … SELECT), spread over 30 days instead of 90. Rollups are not rebuilt: the replay
reads the ledger for the traffic and only the daily rollups for what was spent (a few
hundred rows, timed in bench/REPORTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reports_bench  # noqa: E402  (sets Django up)
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from gateway.models import Baseline, LanguageModel  # noqa: E402
from reports.candidate import candidate_from_data  # noqa: E402
from reports.filters import since_window  # noqa: E402
from reports.whatif import replay  # noqa: E402

CANDIDATES = {
    "everything on gpt-4o-mini": {"routes": [{"name": "all", "chain": ["gpt-4o-mini"]}]},
    "low-priority features on llama": {
        "routes": [
            {"name": "low", "priority": "low", "chain": ["llama-3.1-8b"]},
            {"name": "short", "max_prompt_tokens": 500, "chain": ["gpt-4o-mini"]},
            {"name": "rest", "chain": ["gpt-4o"]},
        ],
        "priorities": {"product/moderation": "low", "platform": "low"},
        "token_ratios": {"sim-local": "1.1"},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("Set DATABASE_URL to a PostgreSQL database made for the benchmark.")
    if not connection.settings_dict["NAME"].endswith("bench"):
        sys.exit("The benchmark empties the ledger: use a database named like *bench.")
    call_command("migrate", verbosity=0)
    shapes = reports_bench.configure()
    gpt4o = LanguageModel.objects.get(name="gpt-4o")
    Baseline.objects.update_or_create(team=None, defaults={"model": gpt4o, "cache": False})
    # 30 days instead of 90; reserved_usd (added to the ledger after reports_bench) is 0.
    insert = reports_bench.INSERT.replace("'90 days'", "'30 days'")
    insert = insert.replace("cache, content)", "cache, content, reserved_usd)")
    reports_bench.INSERT = insert.replace("'miss' END, NULL\n", "'miss' END, NULL, 0\n")
    end = timezone.now()
    print(f"Generating {args.records:,} ledger rows over 30 days…", flush=True)
    started = time.perf_counter()
    reports_bench.generate(args.records, shapes, end)
    print(f"  generated in {time.perf_counter() - started:.1f} s", flush=True)
    start, stop = since_window("30d", end)
    for name, data in CANDIDATES.items():
        candidate = candidate_from_data(data)
        timings = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            result = replay(start=start, end=stop, team_ids=None, candidate=candidate)
            timings.append(time.perf_counter() - began)
        total = result["total"]
        baseline = total["baseline_usd"]  # None when some request has no priced baseline
        print(
            f"{name}: {total['requests']:,} requests replayed, median "
            f"{statistics.median(timings):.2f} s (max {max(timings):.2f} s); candidate "
            f"${total['candidate_usd']:.2f}, baseline "
            f"{'—' if baseline is None else f'${baseline:.2f}'}",
            flush=True,
        )


if __name__ == "__main__":
    main()
