"""A valid request's latency while random keys flood the gateway (issue 16, Low 3), this
checkout beside another one (`--compare`, e.g. a worktree of main), measured in one run.

    git worktree add /tmp/gw-main main                 # the code to compare with
    /work/main/.venv/bin/python bench/auth_flood.py --compare /tmp/gw-main
        [--rate 600] [--seconds 8] [--pairs 2]

Each checkout is served the production way (uvicorn, uvloop, httptools, one worker,
PostgreSQL, Redis, DEBUG off), against the same database and the same loopback mock. In
turn, interleaved `--pairs` times, each gateway gets: one connection of valid requests
(cache miss, mock upstream at 0 ms) for `--seconds` alone, then the same while a separate
process sends `--rate` requests per second with random keys (a fixed rate, as an attacker's
script would; at most 512 in flight). Reported per gateway: the valid requests' p50/p90/p99
alone and during the flood, the flood's answers, the database transactions the flood cost
(PostgreSQL's `pg_stat_database.xact_commit` of the bench database), and the gateway's CPU
per flood request (from /proc: the phase's CPU less its valid requests' at their rate alone),
the figure that moves least when other work shares the machine.

This checkout runs twice: with its defaults (the throttle on: 60 failures a minute per client
address, and the flood comes from one address) and with `GATEWAY_AUTH_FAILURES_PER_MINUTE=0`
(what a flood from many addresses meets: only the negative cache and the shared reload).

Like the suite it drops and recreates its database (BENCH_DATABASE_URL, default
gateway_bench) and flushes its Redis db (BENCH_REDIS_URL, default db 14); ports are free
ones picked at start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import Proc, cpu_seconds, wait_port  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
CHAT = "/v1/chat/completions"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=env.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gateway_bench"
        ),
        REDIS_URL=env.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        SECRET_KEY="bench-only-secret-key-not-for-production",
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="ERROR",
        BENCH_API_KEY="mock-upstream-key",
        CELERY_TASK_ALWAYS_EAGER="1",
        GATEWAY_LEDGER_IN_PROCESS="0",  # records wait in Redis: no drainer competes
    )
    env.pop("CELERY_BROKER_URL", None)
    return env


def prepare(env: dict[str, str], mock_port: int) -> str:
    db = env["DATABASE_URL"].rsplit("/", 1)[1]
    psql = ["-h", "127.0.0.1", "-U", "postgres"]
    subprocess.run(["dropdb", *psql, "--if-exists", db], check=True)
    subprocess.run(["createdb", *psql, db], check=True)
    redis_db = env["REDIS_URL"].rsplit("/", 1)[1]
    subprocess.run(["redis-cli", "-n", redis_db, "flushdb"], check=True, capture_output=True)
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    argv = [PY, str(BENCH / "setup_gateway.py"), "setup"]
    for name in ("fast", "slow", "stream", "1s"):
        argv += [f"--{name}-port", str(mock_port)]
    done = subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["key"]


def transactions(db: str) -> int:
    """Committed transactions of `db`, once PostgreSQL has published every session's."""
    query = f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{db}'"

    def read() -> int:
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tAc", query],
            check=True,
            capture_output=True,
            text=True,
        )
        return int(out.stdout.strip())

    last = read()
    for _ in range(20):
        time.sleep(1.2)
        now = read()
        if now == last:
            return now
        last = now
    return last


# --- the flood (a process of its own) ----------------------------------------------------


async def flood(url: str, rate: float, seconds: float) -> dict:
    import aiohttp

    body = json.dumps({"model": "bench-fast", "messages": [{"role": "user", "content": "hi"}]})
    statuses: dict[str, int] = {}
    in_flight: set[asyncio.Task] = set()
    dropped = 0

    async def one(session) -> None:
        headers = {
            "Authorization": "Bearer gw-" + secrets.token_urlsafe(32),
            "Content-Type": "application/json",
        }
        try:
            async with session.post(url + CHAT, data=body, headers=headers) as response:
                await response.read()
                code = str(response.status)
        except Exception as exc:  # noqa: BLE001 - counted, not raised
            code = type(exc).__name__
        statuses[code] = statuses.get(code, 0) + 1

    connector = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.monotonic()
        sent = 0
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate)
            while sent < due:
                sent += 1
                if len(in_flight) >= 512:
                    dropped += 1
                    continue
                task = asyncio.create_task(one(session))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            await asyncio.sleep(0.002)
        if in_flight:
            await asyncio.wait(in_flight, timeout=15)
    return {"sent": sent - dropped, "not_sent": dropped, "statuses": statuses}


# --- the valid requests -----------------------------------------------------------------


async def probe(url: str, key: str, seconds: float) -> list[float]:
    """Valid requests one after another on one connection; their latencies in ms."""
    import aiohttp

    headers = {
        "Authorization": f"Bearer {key}",
        "X-Gateway-Feature": "bench",
        "X-Gateway-Cache-TTL": "0",
        "Content-Type": "application/json",
    }
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            i += 1
            body = json.dumps(
                {"model": "bench-fast", "messages": [{"role": "user", "content": f"probe {i}"}]}
            )
            t = time.perf_counter()
            async with session.post(url + CHAT, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"a valid request got {response.status}")
            latencies.append((time.perf_counter() - t) * 1000)
    return latencies


def percentiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"n": len(values), "p50": q[49], "p90": q[89], "p99": q[98]}


def measure(url: str, key: str, args, db: str, server: Proc) -> dict:
    asyncio.run(probe(url, key, 1.0))  # warm: snapshot, connections
    cpu = cpu_seconds(server.tree())
    alone = asyncio.run(probe(url, key, args.seconds))
    cpu_alone = cpu_seconds(server.tree()) - cpu
    before = transactions(db)
    cpu = cpu_seconds(server.tree())
    attacker = subprocess.Popen(
        [
            PY,
            __file__,
            "--flood",
            url,
            "--rate",
            str(args.rate),
            "--seconds",
            str(args.seconds + 1),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    during = asyncio.run(probe(url, key, args.seconds))
    out, _ = attacker.communicate(timeout=120)
    cpu_flood = cpu_seconds(server.tree()) - cpu
    flood_result = json.loads(out.strip().splitlines()[-1])
    spent = transactions(db) - before
    answered = sum(v for k, v in flood_result["statuses"].items() if k.isdigit())
    # The gateway's CPU for the flood: the phase's CPU less what its valid requests cost at
    # the rate measured alone.
    valid_cpu = cpu_alone / max(len(alone), 1) * len(during)
    return {
        "alone": percentiles(alone),
        "flood": percentiles(during),
        "attack": flood_result,
        "transactions": spent,
        "cpu_ms_per_flood_request": max(cpu_flood - valid_cpu, 0) * 1000 / max(answered, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", metavar="CHECKOUT", help="another checkout to serve beside")
    parser.add_argument("--rate", type=float, default=600, help="random-key requests per second")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--flood", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        import uvloop

        print(json.dumps(uvloop.run(flood(args.flood, args.rate, args.seconds))))
        return

    env = env_for()
    db = env["DATABASE_URL"].rsplit("/", 1)[1]
    out = BENCH / "results" / ("auth-flood-" + time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    procs: list[Proc] = []
    try:
        mock_port = free_port()
        mock = [PY, str(BENCH / "mock_provider.py"), "--port", str(mock_port)]
        procs.append(Proc("mock", mock, env=env, log=out / "mock.log"))
        wait_port(mock_port, proc=procs[-1])
        key = prepare(env, mock_port)
        targets = [("this", ROOT, {})]
        targets.append(("this, throttle off", ROOT, {"GATEWAY_AUTH_FAILURES_PER_MINUTE": "0"}))
        if args.compare:
            targets.append((f"compare ({args.compare})", Path(args.compare).resolve(), {}))
        urls, servers = {}, {}
        for label, checkout, extra in targets:
            port = free_port()
            argv = [PY, "-m", "uvicorn", "gatewaysite.asgi:application", "--host", "127.0.0.1",
                    "--port", str(port), "--workers", "1", "--loop", "uvloop",
                    "--http", "httptools", "--no-access-log"]  # fmt: skip
            name = f"gateway-{port}"
            proc = Proc(name, argv, env={**env, **extra}, log=out / f"{name}.log", cwd=checkout)
            procs.append(proc)
            urls[label] = f"http://127.0.0.1:{port}"
            servers[label] = proc
            wait_port(port, proc=proc)
        time.sleep(2)
        results: dict[str, list[dict]] = {label: [] for label in urls}
        for pair in range(args.pairs):
            for label, url in urls.items():
                print(f"pair {pair + 1}: {label} ...", flush=True)
                results[label].append(measure(url, key, args, db, servers[label]))
        (out / "results.json").write_text(json.dumps(results, indent=1))
        print(table(results, args))
        print(f"\nresults: {out}")
    finally:
        for proc in reversed(procs):
            proc.stop()


def table(results: dict[str, list[dict]], args) -> str:
    lines = [
        f"Valid requests (1 connection, ms) alone and during {args.rate:g} random-key "
        f"requests/s, {args.seconds:g} s each, {args.pairs} interleaved pair(s):",
        "",
        "| gateway | run | alone p50 / p99 | flood p50 / p90 / p99 | flood answers | "
        "DB transactions | gateway CPU per flood request |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, runs in results.items():
        for i, r in enumerate(runs, 1):
            a, f = r["alone"], r["flood"]
            answers = ", ".join(f"{k}: {v}" for k, v in sorted(r["attack"]["statuses"].items()))
            if r["attack"]["not_sent"]:
                answers += f" (not sent, 512 in flight: {r['attack']['not_sent']})"
            lines.append(
                f"| {label} | {i} | {a['p50']:.1f} / {a['p99']:.1f} | "
                f"{f['p50']:.1f} / {f['p90']:.1f} / {f['p99']:.1f} | {answers} | "
                f"{r['transactions']} | {r['cpu_ms_per_flood_request']:.2f} ms |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
