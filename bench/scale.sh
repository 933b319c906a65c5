#!/bin/sh
# Issue 24's scale suite, one command: the ledger, the roll-ups, the dashboards, the admin
# and the config at 5,000 teams and ROWS ledger rows (10 M by default), on this machine's
# PostgreSQL. Every benchmark makes its own database (dropped and created here) and its own
# data, so the command also regenerates everything:
#
#   bench/scale.sh [ROWS] 2>&1 | tee var/scale.log
#
# PG (postgres://postgres@127.0.0.1:5432) and REDIS_URL (redis://127.0.0.1:6379/14) to
# change where. The figures it printed, and what they mean for one PostgreSQL, are in
# bench/HISTORY.md, "Scale suite".
set -eu
cd "$(dirname "$0")/.."
ROWS=${1:-10000000}
TEAMS=${TEAMS:-5000}      # smaller only to try the script out
KEYS=${KEYS:-100000}
RECENT=${RECENT:-1000000}  # the roll-up and reconciliation benchmarks' rows
PG=${PG:-postgres://postgres@127.0.0.1:5432}
PY=.venv/bin/python
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/14}"
export SECRET_KEY=benchmark-only-not-secret

fresh() {
    $PY - "$PG" "$1" <<'EOF'
import sys, psycopg
url, name = sys.argv[1], sys.argv[2]
with psycopg.connect(url + "/postgres", autocommit=True) as db:
    db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    db.execute(f"CREATE DATABASE {name}")
EOF
    echo "$PG/$1"
}
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "1. the ledger: the partitioning migration over $ROWS rows; drain throughput with roll-ups on; pruning a day"
$PY bench/partition_bench.py --rows "$ROWS"

step "2. roll-up cost: roll_up_recent over 1,000,000 requests of the last two hours, a repair, a drain during a rebuild"
DATABASE_URL=$(fresh gateway_scale_rollup_bench) $PY bench/rollup_repair_bench.py --records "$RECENT"

step "3. every /reports/ page at 5,000 teams, 20,000 features, 10,000 budgets, 30 days of roll-ups"
BENCH_DATABASE_URL=$(fresh gateway_scale_monthly_bench) $PY bench/monthly_bench.py --teams "$TEAMS"

step "4. config reload at 5,000 teams and 100,000 keys; then the admin's usage-record list over $ROWS rows"
url=$(fresh gateway_scale_config_bench)
DATABASE_URL=$url $PY bench/config_reload.py --teams "$TEAMS" --keys "$KEYS"
DATABASE_URL=$url $PY bench/admin_usage_list.py --records "$ROWS"

step "5. budget reconciliation at 5,000 teams (20,000 windows) over 1,000,000 rows of this month"
DATABASE_URL=$(fresh gateway_scale_reconcile_bench) $PY bench/reconcile_bench.py --teams "$TEAMS" --records "$RECENT"

step "done"
