"""What removing prompt-cache breakpoints costs per call to an OpenAI-kind provider:
`without_anthropic_fields` (gateway/providers/openai.py) scans every request before it is sent,
and copies only a request that has a breakpoint. Side by side with building the payload it
joins (OpenAIAdapter.payload's own dict copy), on the same bodies, in one run.

    PYTHONPATH=$PWD .venv/bin/python bench/cache_control_scan.py
"""

from __future__ import annotations

import timeit

from gateway.providers.openai import without_anthropic_fields

MARK = {"type": "ephemeral"}
BODIES = {
    "2 messages": {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ],
    },
    "10 multipart messages + 5 tools": {
        "model": "m",
        "messages": [{"role": "system", "content": "x"}]
        + [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "q"},
                    {"type": "image_url", "image_url": {"url": "u"}},
                ],
            }
            for _ in range(10)
        ],
        "tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(5)],
    },
    "2 messages, one breakpoint (copied)": {
        "model": "m",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "x", "cache_control": MARK}]},
            {"role": "user", "content": "Hello"},
        ],
    },
}


def best_ns(fn, number: int = 100_000, rounds: int = 5) -> float:
    return min(timeit.repeat(fn, number=number, repeat=rounds)) / number * 1e9


def main() -> None:
    print(f"{'body':<38} {'scan':>9} {'payload copy':>13}")
    for name, body in BODIES.items():
        scan = best_ns(lambda b=body: without_anthropic_fields(b))
        copy = best_ns(lambda b=body: {**b, "model": "upstream"})
        print(f"{name:<38} {scan:>7.0f}ns {copy:>11.0f}ns")


if __name__ == "__main__":
    main()
