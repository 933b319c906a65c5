"""What validating a chat request costs, per request: parse_json + validate_chat, the work
gateway/validation.py does on every request, on typical bodies. No server, no database.

    PYTHONPATH=$PWD .venv/bin/python bench/spec_validation.py                  # this checkout
    PYTHONPATH=$PWD .venv/bin/python bench/spec_validation.py --baseline b86d808

`--baseline REV` also times gateway/validation.py as it was at git revision REV (loaded from
`git show`, beside this checkout's), interleaved with this checkout's, best of `--rounds`.
The baseline's hand-written validator refuses some of these bodies (n > 1, custom tools): a
refusal is timed like an acceptance, since either is the work done per request.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
HISTORY = [SYSTEM] + [
    {"role": "user" if i % 2 == 0 else "assistant", "content": f"Turn {i}: " + "words " * 40}
    for i in range(20)
]
BODIES = {
    "small chat": {
        "model": "gpt-4o-mini",
        "messages": [SYSTEM, {"role": "user", "content": "Say hello in five words."}],
        "temperature": 0.2,
        "max_tokens": 100,
    },
    "streamed, with tools": {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER],
        "tool_choice": "auto",
        "stream": True,
        "stream_options": {"include_usage": True},
    },
    "20-turn history": {"model": "gpt-4o", "messages": HISTORY, "max_completion_tokens": 500},
    "image and json_schema": {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            }
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
    },
}


def load(source: str, name: str):
    """gateway/validation.py from `source` text, as module `name` (imports resolve here)."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(name, f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_request_us(module, raw: bytes, n: int) -> float:
    parse, validate, invalid = module.parse_json, module.validate_chat, module.InvalidRequest
    start = time.perf_counter()
    for _ in range(n):
        try:
            validate(parse(raw))
        except invalid:
            pass
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", help="a git revision to compare with")
    parser.add_argument("-n", type=int, default=5000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import django

    sys.path.insert(0, str(ROOT))
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
    django.setup()
    modules = {"this checkout": load((ROOT / "gateway/validation.py").read_text(), "now")}
    if args.baseline:
        old = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{args.baseline}:gateway/validation.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        modules[args.baseline] = load(old, "baseline")
    print(f"{'body':24} " + " ".join(f"{name:>16}" for name in modules) + "   (µs/request)")
    for label, body in BODIES.items():
        raw = orjson.dumps(body)
        best = {name: float("inf") for name in modules}
        for _ in range(args.rounds):
            for name, module in modules.items():
                best[name] = min(best[name], per_request_us(module, raw, args.n))
        print(f"{label:24} " + " ".join(f"{best[name]:16.1f}" for name in modules))


if __name__ == "__main__":
    main()
