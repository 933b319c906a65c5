"""The scenarios of issue 6, in the order one run measures them (see bench/README.md)."""

from __future__ import annotations

import functools
import json
import platform
import subprocess
import threading
import time
from pathlib import Path

import wrkrun
from procs import Proc, cpu_seconds, rss_mb

BENCH = Path(__file__).resolve().parent
PY = str(BENCH.parent / ".venv" / "bin" / "python")
MOCK_FAST, MOCK_SLOW, MOCK_STREAM = 9101, 9102, 9103
CHAT = "/v1/chat/completions"


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}{CHAT}"


def machine() -> dict:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "cpu": cpu,
        "cores": len(__import__("os").sched_getaffinity(0)),
        "mem_gb": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "python_speed_ms": python_speed_ms(),
    }


def python_speed_ms() -> float:
    """How fast this machine runs pure Python, to compare runs made on different machines
    (the workplace's machines differ by up to 3x): the best of 5 timings of a fixed loop,
    in ms; lower is faster."""
    import timeit

    loop = "s = 0\nfor i in range(200_000): s += i"
    return round(1000 * min(timeit.repeat(loop, number=1, repeat=5)), 1)


def measured(proc: Proc, fn, also: list[Proc] = ()):
    """Run `fn()` (a wrk run) and add the server's CPU per request and its largest RSS.

    `also`: processes whose CPU counts as the server's too (the gateway's ledger drainer)."""
    pids = proc.tree()
    counted = pids + [p for other in also for p in other.tree()]
    before = cpu_seconds(counted)
    result = fn().as_dict()
    cpu = cpu_seconds(counted) - before
    result["cpu_ms_per_req"] = 1000 * cpu / max(1, result["requests"])
    result["cpu_cores_busy"] = cpu / max(0.001, result["seconds"])
    result["max_rss_mb"] = max(rss_mb(p) for p in pids)
    return result


def direct(run) -> None:
    s = run.cfg["seconds"]
    r = run.results.setdefault("direct", {})
    for c in (1, 16, 64):
        r[f"c{c}"] = wrkrun.run(_url(MOCK_FAST), connections=c, seconds=s).as_dict()
    r["slow_c200"] = wrkrun.run(_url(MOCK_SLOW), connections=200, seconds=max(s, 5)).as_dict()
    if run.cfg["slow_long"]:
        r["slow_c200_long"] = wrkrun.run(
            _url(MOCK_SLOW), connections=200, seconds=run.cfg["slow_long"]
        ).as_dict()
    r["stream_c64"] = wrkrun.run(_url(MOCK_FAST), connections=64, seconds=s, stream=True).as_dict()
    r["ttft"] = stream_client("ttft", f"http://127.0.0.1:{MOCK_STREAM}/v1", "", n=run.cfg["ttft_n"])


def stream_client(
    mode: str, url: str, key: str, *, n: int = 100, c: int = 1000, model: str = "bench-stream"
) -> dict:
    argv = [
        PY,
        str(BENCH / "stream_client.py"),
        mode,
        "--url",
        url,
        "--key",
        key,
        "--model",
        model,
        "-n",
        str(n),
        "-c",
        str(c),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def gateway(run, gw: Proc, port: int) -> None:
    s, key = run.cfg["seconds"], run.keys["key"]
    url = _url(port)
    r = run.results.setdefault("gateway", {})
    wrkrun.run(url, connections=16, seconds=run.cfg["warmup"], key=key, cache_ttl="60")
    for c in (1, 16, 64):
        r[f"c{c}"] = measured(
            gw,
            lambda c=c: wrkrun.run(url, connections=c, seconds=s, key=key, cache_ttl="60"),
            run.drainers,
        )
    slow = dict(connections=200, key=key, model="bench-slow", cache_ttl="60")
    for name, seconds in (("slow_c200", max(s, 5)), ("slow_c200_long", run.cfg["slow_long"])):
        if seconds:
            load = functools.partial(wrkrun.run, url, seconds=seconds, **slow)
            r[name] = measured(gw, load, run.drainers)
    r["stream_c64"] = measured(
        gw,
        lambda: wrkrun.run(url, connections=64, seconds=s, key=key, stream=True, cache_ttl="0"),
        run.drainers,
    )
    r["ttft"] = stream_client("ttft", f"http://127.0.0.1:{port}/v1", key, n=run.cfg["ttft_n"])
    wrkrun.run(url, connections=1, seconds=1, key=key, prompt="fixed", cache_ttl="3600")
    r["cache_hit_c64"] = measured(
        gw,
        lambda: wrkrun.run(
            url, connections=64, seconds=s, key=key, prompt="fixed", cache_ttl="3600"
        ),
        run.drainers,
    )
    r["budget_near_c64"] = measured(
        gw,
        lambda: wrkrun.run(url, connections=64, seconds=s, key=run.keys["near_key"], cache_ttl="0"),
        run.drainers,
    )
    time.sleep(1)  # let the last settles land
    done = subprocess.run(
        [PY, str(BENCH / "setup_gateway.py"), "status"],
        env=run.env,
        capture_output=True,
        text=True,
        check=True,
    )
    r["budget_near_status"] = json.loads(done.stdout.strip().splitlines()[-1])


def py_spy(pid: int, seconds: int, out: Path, fmt: str = "raw") -> None:
    """`py-spy record` of one process: samples of the thread holding the GIL, 200 per second."""
    argv = [str(BENCH.parent / ".venv/bin/py-spy"), "record", "-p", str(pid), "-d", str(seconds)]
    argv += ["-r", "200", "-f", fmt, "-o", str(out), "--nonblocking", "--gil"]
    subprocess.run(argv, check=fmt == "raw", capture_output=True)


def summarize_profile(raw: Path) -> str:
    """profile_summary.py's report of a raw profile, also written next to it."""
    argv = [PY, str(BENCH / "profile_summary.py"), str(raw)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    (raw.parent / "profile_summary.txt").write_text(done.stdout)
    return done.stdout


def profile(run, gw: Proc, port: int, seconds: int) -> None:
    """py-spy on one worker while wrk loads the gateway at 64 connections (not a measured run)."""
    worker = gw.workers()[0]
    load = threading.Thread(
        target=wrkrun.run,
        args=(_url(port),),
        kwargs=dict(connections=64, seconds=seconds + 4, key=run.keys["key"], cache_ttl="60"),
    )
    load.start()
    time.sleep(2)
    py_spy(worker, seconds, run.out / "profile.txt")
    py_spy(worker, min(seconds, 10), run.out / "profile.speedscope.json", fmt="speedscope")
    load.join()
    summarize_profile(run.out / "profile.txt")
    run.results["profile"] = str(run.out / "profile_summary.txt")


def soak(run, gw: Proc, port: int) -> None:
    """wrk at 64 connections for the soak time; every worker's RSS sampled every 10 s."""
    seconds = run.cfg["soak"]
    workers = gw.workers()
    holder: dict = {}
    load = threading.Thread(
        target=lambda: holder.update(
            res=wrkrun.run(
                _url(port), connections=64, seconds=seconds, key=run.keys["key"], cache_ttl="60"
            )
        )
    )
    counted = workers + [p for d in run.drainers for p in d.tree()]
    before = cpu_seconds(counted)
    load.start()
    samples, queued = [], []
    started = time.monotonic()
    while load.is_alive():
        samples.append([round(time.monotonic() - started)] + [round(rss_mb(p), 1) for p in workers])
        queued.append(_ledger_queue(run))
        load.join(timeout=10)
    res = holder["res"].as_dict()
    res["cpu_ms_per_req"] = 1000 * (cpu_seconds(counted) - before) / max(1, res["requests"])
    res["rss_samples"] = samples  # [seconds, worker 1 MB, worker 2 MB, ...]
    res["ledger_queue_samples"] = queued  # records waiting in Redis: the drainer keeps up
    res["drainer_rss_mb"] = [round(rss_mb(p)) for d in run.drainers for p in d.tree()]
    run.results["soak"] = res


def _ledger_queue(run) -> int:
    """Records waiting over every ledger shard (gw:ledger, gw:ledger:1 … gw:ledger:63)."""
    db = run.env["REDIS_URL"].rsplit("/", 1)[1]
    names = ["gw:ledger"] + [f"gw:ledger:{shard}" for shard in range(1, 64)]
    script = "local n = 0 for _, k in ipairs(KEYS) do n = n + redis.call('LLEN', k) end return n"
    done = subprocess.run(
        ["redis-cli", "-n", db, "eval", script, str(len(names)), *names],
        capture_output=True,
        text=True,
        check=False,
    )
    return int(done.stdout.strip() or 0)


def hold(run, start_gateway) -> None:
    """One worker holds 1,000 concurrent streams with 1 s upstream latency."""
    gw1 = start_gateway(run, 9201, 1)
    try:
        stream_client("ttft", "http://127.0.0.1:9201/v1", run.keys["key"], n=3, model="bench-fast")
        res = stream_client(
            "hold", "http://127.0.0.1:9201/v1", run.keys["key"], c=run.cfg["hold"], model="bench-1s"
        )
        res["max_rss_mb"] = max(rss_mb(p) for p in gw1.tree())
        run.results["hold_1w"] = res
    finally:
        run.stop(gw1)


def litellm(run, start_litellm) -> None:
    """LiteLLM's proxy (master key on, no database) with 1 and then 2 workers."""
    s, key = run.cfg["seconds"], run.litellm_key
    url = "http://127.0.0.1:9300" + CHAT
    r = run.results.setdefault("litellm", {})
    for workers in (1, 2):
        proc = start_litellm(run, workers)
        try:
            wrkrun.run(url, connections=16, seconds=run.cfg["warmup"], key=key)
            if workers == 1:
                r["c1_1w"] = measured(
                    proc, lambda: wrkrun.run(url, connections=1, seconds=s, key=key)
                )
            r[f"c64_{workers}w"] = measured(
                proc, lambda: wrkrun.run(url, connections=64, seconds=s, key=key)
            )
            r[f"slow_c200_{workers}w"] = measured(
                proc,
                lambda: wrkrun.run(
                    url, connections=200, seconds=max(s, 5), model="bench-slow", key=key
                ),
            )
        finally:
            run.stop(proc)


def run_all(run, start_gateway, start_litellm, args) -> None:
    run.results["machine"] = machine()
    direct(run)
    gw = start_gateway(run, 9200, 2)
    gateway(run, gw, 9200)
    if args.profile_seconds:
        profile(run, gw, 9200, args.profile_seconds)
    if run.cfg["soak"]:
        soak(run, gw, 9200)
    run.stop(gw)
    hold(run, start_gateway)
    if not args.no_litellm:
        try:
            litellm(run, start_litellm)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            run.results["litellm_error"] = str(exc)
