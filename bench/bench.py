"""The benchmark suite of issue 6 (run by bench/run.sh, never by CI or pytest).

Starts the loopback mocks, configures a dedicated database and Redis db, serves the gateway
the production way (uvicorn, uvloop, httptools, PostgreSQL, Redis, DEBUG off) and measures
each scenario with wrk; then LiteLLM's proxy against the same mocks, in the same run.
Results: bench/results/<stamp>.json and .md; the markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402
import scenarios  # noqa: E402
from procs import Proc, port_free, wait_port  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = str(ROOT / ".venv" / "bin" / "python")
# BENCH_PORT_OFFSET moves every port below, so two benches can run on a shared machine.
_OFFSET = int(os.environ.get("BENCH_PORT_OFFSET", "0"))
MOCKS = {  # name: (port, mock_provider.py arguments)
    "fast": (9101 + _OFFSET, []),
    "slow": (9102 + _OFFSET, ["--latency-ms", "500"]),
    "stream": (9103 + _OFFSET, ["--chunks", "8", "--chunk-interval-ms", "20"]),
    "1s": (9104 + _OFFSET, ["--latency-ms", "1000"]),
}
GATEWAY_PORT, GATEWAY_1W_PORT, LITELLM_PORT = (p + _OFFSET for p in (9200, 9201, 9300))
LITELLM_KEY = "sk-bench-litellm-master-key"  # LiteLLM 1.108 refuses to start without one
MODES = {
    "quick": {"seconds": 5, "warmup": 2, "soak": 30, "ttft_n": 50, "hold": 1000, "slow_long": 0},
    "full": {"seconds": 15, "warmup": 3, "soak": 600, "ttft_n": 200, "hold": 1000, "slow_long": 60},
}


def gateway_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=env.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gateway_bench"
        ),
        REDIS_URL=env.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        CELERY_BROKER_URL=env.get("BENCH_CELERY_BROKER_URL", "redis://127.0.0.1:6379/13"),
        SECRET_KEY="bench-only-secret-key-not-for-production",
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        BENCH_API_KEY="mock-upstream-key",
        # The Procfile's shape: the Celery worker drains the ledger (beat, every 5 s), so the
        # web workers' event loops never share the GIL with a batch writer. Its CPU is
        # counted in the gateway's CPU per request (`Run.drainers`).
        GATEWAY_LEDGER_IN_PROCESS=env.get("GATEWAY_LEDGER_IN_PROCESS", "0"),
    )
    return env


class Run:
    """What one benchmark run started and measured."""

    def __init__(self, mode: str, out: Path, soak_seconds: int | None) -> None:
        self.mode = mode
        self.cfg = dict(MODES[mode])
        if soak_seconds is not None:
            self.cfg["soak"] = soak_seconds
        self.out = out
        self.env = gateway_env()
        self.procs: list[Proc] = []
        self.results: dict = {"mode": mode, "config": self.cfg}
        self.keys: dict[str, str] = {}
        self.litellm_key = LITELLM_KEY
        self.drainers: list[Proc] = []  # the Celery worker and beat

    def spawn(self, name: str, argv: list[str]) -> Proc:
        """A process that listens on no port (started, not waited for)."""
        proc = Proc(name, argv, env=self.env, log=self.out / f"{name}.log")
        self.procs.append(proc)
        return proc

    def start(self, name: str, argv: list[str], port: int, env=None, timeout=60.0) -> Proc:
        if not port_free(port):
            raise RuntimeError(f"port {port} is taken; stop whatever listens there first")
        proc = Proc(name, argv, env=env or self.env, log=self.out / f"{name}.log")
        self.procs.append(proc)
        wait_port(port, timeout=timeout, proc=proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def prepare_database(run: Run, fleet: int = 0) -> None:
    """A fresh database and Redis db with the bench's teams (and `fleet` more, setup_gateway.py)."""
    env = run.env
    db = env["DATABASE_URL"].rsplit("/", 1)[1]
    psql = ["-h", "127.0.0.1", "-U", "postgres"]
    subprocess.run(["dropdb", *psql, "--if-exists", db], check=True)
    subprocess.run(["createdb", *psql, db], check=True)
    redis_db = env["REDIS_URL"].rsplit("/", 1)[1]
    subprocess.run(["redis-cli", "-n", redis_db, "flushdb"], check=True, capture_output=True)
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    argv = [PY, str(BENCH / "setup_gateway.py"), "setup", "--fleet", str(fleet)]
    for name, (port, _) in MOCKS.items():
        argv += [f"--{name}-port", str(port)]
    done = subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    run.keys = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"gateway key for the bench team: {run.keys['key']}")


def start_gateway(run: Run, port: int, workers: int) -> Proc:
    argv = [
        str(ROOT / ".venv/bin/uvicorn"),
        "gatewaysite.asgi:application",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
    ]
    proc = run.start(f"gateway-{workers}w", argv, port)
    time.sleep(1.5 * workers)  # every worker imports Django before it accepts
    return proc


def start_drainers(run: Run) -> None:
    """The Procfile's `worker` and `beat`, unless the web workers drain in process."""
    if run.env["GATEWAY_LEDGER_IN_PROCESS"] not in ("0", "false", "False"):
        return
    celery = str(ROOT / ".venv/bin/celery")
    run.drainers = [
        run.spawn(
            "celery-worker",
            [celery, "-A", "gatewaysite", "worker", "--loglevel=WARNING", "--concurrency", "1"],
        ),
        run.spawn(
            "celery-beat",
            [
                celery,
                "-A",
                "gatewaysite",
                "beat",
                "--loglevel=WARNING",
                "-s",
                str(run.out / "celerybeat-schedule"),
            ],
        ),
    ]
    time.sleep(6)  # both import Django; the first drain is due 5 s after beat starts


def start_litellm(run: Run, workers: int) -> Proc:
    venv = BENCH / ".venv-litellm" / "bin"
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_ADMIN_UI": "True",
        "LITELLM_MASTER_KEY": LITELLM_KEY,
    }
    argv = [
        str(venv / "litellm"),
        "--config",
        str(BENCH / "litellm_config.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        str(LITELLM_PORT),
        "--num_workers",
        str(workers),
    ]
    proc = run.start(f"litellm-{workers}w", argv, LITELLM_PORT, env=env, timeout=600)
    time.sleep(3 * workers)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=sorted(MODES), nargs="?", default="quick")
    parser.add_argument("--soak-seconds", type=int, default=None)
    parser.add_argument("--no-litellm", action="store_true", help="skip the side-by-side runs")
    parser.add_argument(
        "--profile-seconds",
        type=int,
        default=0,
        help="also record a py-spy profile of one worker under load",
    )
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = BENCH / "results" / stamp
    out.mkdir(parents=True, exist_ok=True)
    run = Run(args.mode, out, args.soak_seconds)
    try:
        for name, (port, extra) in MOCKS.items():
            argv = [PY, str(BENCH / "mock_provider.py"), "--port", str(port), *extra]
            run.start(f"mock-{name}", argv, port)
        prepare_database(run)
        start_drainers(run)
        scenarios.run_all(run, start_gateway, start_litellm, args)
    finally:
        run.stop_all()
        (out / "results.json").write_text(json.dumps(run.results, indent=2))
    table = report.markdown(run.results)
    (out / "results.md").write_text(table)
    print(table)
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
