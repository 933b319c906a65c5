#!/usr/bin/env bash
# The benchmark suite of issue 6 (never run by CI or pytest). From the repository root:
#   bench/run.sh            # = quick: 5 s per scenario, 30 s soak (~6 minutes with LiteLLM)
#   bench/run.sh full       # 15 s per scenario (500 ms upstream also 60 s), 10-minute soak,
#                           # py-spy profile (~24 minutes)
#   bench/run.sh quick --soak-seconds 60 --no-litellm --profile-seconds 20
# Needs PostgreSQL and Redis on 127.0.0.1 (the database gateway_bench and Redis db 14 are
# dropped and recreated: use nothing else there). Results: bench/results/<stamp>/.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-quick}"
[ $# -gt 0 ] && shift

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk
fi
[ -x .venv/bin/python ] || { echo "no .venv: run 'make setup' first" >&2; exit 1; }
[ -x .venv/bin/py-spy ] || .venv/bin/pip install -q py-spy
if [ ! -x bench/.venv-litellm/bin/litellm ]; then
  python3 -m venv bench/.venv-litellm
  # httptools: LiteLLM's uvicorn then parses HTTP with the same C parser as ours (fair).
  bench/.venv-litellm/bin/pip install -q 'litellm[proxy]' httptools
fi

extra=()
if [ "$mode" = full ]; then extra=(--profile-seconds 20); fi
exec .venv/bin/python bench/bench.py "$mode" "${extra[@]}" "$@"
