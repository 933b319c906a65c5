"""One scenario, quickly: the loop for trying a change before a full `bench/run.sh`.

    .venv/bin/python bench/probe.py                    # 1 worker, 64 conns, 8 s, cache miss
    .venv/bin/python bench/probe.py --connections 1 --workers 2 --profile 10
    .venv/bin/python bench/probe.py --scenario hit     # cache hits
    .venv/bin/python bench/probe.py --scenario slow --connections 200

Same setup as the suite (database gateway_bench, Redis db 14, the mocks, uvicorn the
production way); prints direct and gateway figures from the same run, and with --profile a
py-spy summary of one worker under the same load. Figures from a probe are for comparing
two versions of the code side by side, not for the README table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenarios  # noqa: E402
import wrkrun  # noqa: E402

import bench  # noqa: E402

SCENARIOS = {  # name: (mock, wrk keyword arguments)
    "miss": ("fast", dict(cache_ttl="60")),
    "hit": ("fast", dict(cache_ttl="3600", prompt="fixed")),
    "slow": ("slow", dict(cache_ttl="60", model="bench-slow")),
    "stream": ("fast", dict(cache_ttl="0", stream=True)),
    "hold": ("1s", {}),  # 1,000 concurrent streams of 1 s (stream_client.py hold)
    "ttft": ("stream", {}),  # streams one at a time: time to first token, direct and gateway
    "inproc": ("fast", {}),  # the ASGI app called in process: the gateway's own CPU (inproc.py)
    "inproc-embed": ("fast", {}),  # the same with /v1/embeddings (this checkout only)
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="miss")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--profile", type=int, default=0, help="py-spy seconds (0: none)")
    parser.add_argument(
        "--compare",
        metavar="CHECKOUT",
        help="inproc: also run this other checkout's code, interleaved with this one's",
    )
    parser.add_argument(
        "--compare-env",
        metavar="NAME=VALUE",
        help="inproc: also run this checkout with this variable set (GATEWAY_FAST_PATH=0)",
    )
    parser.add_argument(
        "--also-path",
        action="append",
        metavar="PATH",
        help="inproc: also run this checkout on this endpoint (/v1/messages, /v1/responses)",
    )
    parser.add_argument(
        "--teams",
        type=int,
        default=0,
        help="inproc: spread the requests over this many teams (a cluster's nodes)",
    )
    parser.add_argument("--pairs", type=int, default=3, help="inproc: runs of each checkout")
    parser.add_argument("--path", help="inproc: the endpoint every run calls (/v1/messages...)")
    parser.add_argument(
        "--model", help="inproc: the model asked for (bench-claude: Anthropic kind)"
    )
    args = parser.parse_args()
    out = bench.BENCH / "results" / ("probe-" + time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    run = bench.Run("quick", out, 0)
    mock, wrk_args = SCENARIOS[args.scenario]
    port = bench.MOCKS[mock][0]
    url = f"http://127.0.0.1:{port}{scenarios.CHAT}"
    try:
        for name, (mport, extra) in bench.MOCKS.items():
            argv = [bench.PY, str(bench.BENCH / "mock_provider.py"), "--port", str(mport), *extra]
            run.start(f"mock-{name}", argv, mport)
        bench.prepare_database(run, fleet=args.teams)
        if args.scenario == "hold":
            gw = bench.start_gateway(run, bench.GATEWAY_PORT, args.workers)
            url = f"http://127.0.0.1:{bench.GATEWAY_PORT}/v1"
            res = scenarios.stream_client("hold", url, run.keys["key"], model="bench-1s")
            res["max_rss_mb"] = max(scenarios.rss_mb(p) for p in gw.tree())
            print(json.dumps(res, indent=1))
            return
        if args.scenario in ("inproc", "inproc-embed"):
            _inproc(run, args)
            return
        if args.scenario == "ttft":
            gw = bench.start_gateway(run, bench.GATEWAY_PORT, args.workers)
            n = max(50, args.seconds * 25)
            out = {
                "direct": scenarios.stream_client("ttft", url.rsplit("/", 2)[0], "", n=n),
                "gateway": scenarios.stream_client(
                    "ttft", f"http://127.0.0.1:{bench.GATEWAY_PORT}/v1", run.keys["key"], n=n
                ),
            }
            print(json.dumps(out, indent=1))
            return
        direct = wrkrun.run(url, connections=args.connections, seconds=args.seconds, **wrk_args)
        gw = bench.start_gateway(run, bench.GATEWAY_PORT, args.workers)
        gw_url = scenarios._url(bench.GATEWAY_PORT)
        key = run.keys["key"]
        wrkrun.run(gw_url, connections=16, seconds=2, key=key, **wrk_args)
        result = scenarios.measured(
            gw,
            lambda: wrkrun.run(
                gw_url, connections=args.connections, seconds=args.seconds, key=key, **wrk_args
            ),
        )
        print(json.dumps({"direct": direct.as_dict(), "gateway": result}, indent=1))
        if args.profile:
            _profile(run, gw, gw_url, key, args, wrk_args)
    finally:
        run.stop_all()


def _inproc(run, args) -> None:
    # (label, checkout, environment): this checkout, then what it is compared with
    variants = [(str(bench.ROOT), bench.ROOT, run.env)]
    if args.compare:
        other = Path(args.compare).resolve()
        variants.append((str(other), other, run.env))
    if args.compare_env:
        name, _, value = args.compare_env.partition("=")
        variants.append((f"{bench.ROOT} {name}={value}", bench.ROOT, {**run.env, name: value}))
    keys = run.keys["fleet"] if args.teams else [run.keys["key"]]
    argv = [bench.PY, str(bench.BENCH / "inproc.py"), "--key", ",".join(keys)]
    argv += ["--concurrency", str(args.connections)]
    if args.scenario == "inproc-embed":
        argv += ["--path", "/v1/embeddings"]
    elif args.path:
        argv += ["--path", args.path]
    if args.model:
        argv += ["--model", args.model]
    for path in args.also_path or ():  # this checkout on other endpoints, interleaved
        variants.append((f"{bench.ROOT} {path}", bench.ROOT, run.env, path))
    figures: dict[str, list[float]] = {label: [] for label, *_ in variants}
    for _ in range(args.pairs):
        for label, root, env, *path in reversed(variants):  # the others first, then this one
            extra = ["--path", path[0]] if path else []
            done = subprocess.run(argv + extra, cwd=root, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{label} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            figures[label].append(result["cpu_us_per_req"])
            redis = figures.setdefault(f"{label} (Redis, every node)", [])
            redis.append(result.get("redis_us_per_req", 0))
            busiest = figures.setdefault(f"{label} (Redis, busiest node)", [])
            busiest.append(result.get("redis_busiest_us_per_req", 0))
            nodes = result.get("redis_nodes_us_per_req", [])
            print(
                f"{label}: {result['cpu_us_per_req']:.0f} µs CPU per request; Redis "
                f"{redis[-1]:.0f} µs on every node, {busiest[-1]:.0f} µs on the busiest "
                f"(each node, the shared one first: {', '.join(f'{n:.0f}' for n in nodes)}): "
                f"a ceiling of {1e6 / busiest[-1]:,.0f} requests/s for the fleet",
                flush=True,
            )
    print(json.dumps({label: sorted(f) for label, f in figures.items()}, indent=1))
    if args.profile:  # this checkout once more, under py-spy (--rounds sized to --profile s)
        out = run.out / "profile.txt"
        spy = [str(bench.ROOT / ".venv/bin/py-spy"), "record", "-r", "200", "-f", "raw"]
        spy += ["-o", str(out), "--gil", "--"]
        rounds = ["--rounds", str(max(1, args.profile // 4))]
        subprocess.run(spy + argv + rounds, cwd=bench.ROOT, env=run.env, capture_output=True)
        print(scenarios.summarize_profile(out))


def _profile(run, gw, url, key, args, wrk_args) -> None:
    worker = (gw.workers() or [gw.pid])[0]  # 1 worker: no child
    load = threading.Thread(
        target=wrkrun.run,
        args=(url,),
        kwargs=dict(connections=args.connections, seconds=args.profile + 3, key=key, **wrk_args),
    )
    load.start()
    time.sleep(1.5)
    scenarios.py_spy(worker, args.profile, run.out / "profile.txt")
    load.join()
    summary = scenarios.summarize_profile(run.out / "profile.txt")
    print(summary)


if __name__ == "__main__":
    main()
