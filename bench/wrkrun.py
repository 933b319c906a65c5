"""Run Debian's wrk with bench/chat.lua and parse its `--latency` report."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

LUA = Path(__file__).resolve().parent / "chat.lua"
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    seconds: float

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    def as_dict(self) -> dict:
        return asdict(self)


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def parse(output: str) -> WrkResult:
    pct = {p: _ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", output, re.MULTILINE)}
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    seconds = float(total.group(2)) * (_UNITS[total.group(3)] / 1000)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests=int(total.group(1)),
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        p50_ms=pct["50"],
        p90_ms=pct["90"],
        p99_ms=pct["99"],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
        seconds=seconds,
    )


def run(
    url: str,
    *,
    connections: int,
    seconds: float,
    key: str = "",
    model: str = "bench-fast",
    prompt: str = "unique",
    cache_ttl: str = "",
    stream: bool = False,
    timeout_s: int = 10,
) -> WrkResult:
    """One wrk run; POST bodies and headers come from bench/chat.lua."""
    threads = 1 if connections < 4 else 2
    env = {
        **os.environ,
        "BENCH_API_KEY": key,
        "BENCH_MODEL": model,
        "BENCH_PROMPT": prompt,
        "BENCH_CACHE_TTL": cache_ttl,
        "BENCH_STREAM": "1" if stream else "0",
        "BENCH_PATH": "/" + url.split("/", 3)[3],
    }
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{int(seconds)}s",
        "--timeout",
        f"{timeout_s}s",
        "--latency",
        "-s",
        str(LUA),
        url,
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    try:
        return parse(done.stdout)
    except (AttributeError, KeyError) as exc:
        raise RuntimeError(f"unexpected wrk output for {url}:\n{done.stdout}{done.stderr}") from exc
