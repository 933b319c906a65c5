"""Regenerate `openapi-chat.json` from OpenAI's full OpenAPI description.

    python -m gateway.spec.extract /path/to/openai-openapi/openapi.json

Keeps `info` and the component schemas the gateway validates against (ROOTS) with every
schema they reference, unchanged: the vendored file is OpenAI's text, only smaller (3.4 MB
for the whole API, most of it endpoints the gateway does not serve).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from gateway.spec import reachable

ROOTS = (
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ErrorResponse",
    "ListModelsResponse",
    "Model",
    "CreateEmbeddingRequest",
    "CreateEmbeddingResponse",
    "CreateResponse",
    "Response",
    "ResponseStreamEvent",
)
OUT = Path(__file__).with_name("openapi-chat.json")


def subset(spec: dict[str, Any]) -> dict[str, Any]:
    kept = reachable(spec, list(ROOTS))["components"]["schemas"]
    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "components": {"schemas": dict(sorted(kept.items()))},
    }


if __name__ == "__main__":
    source = json.loads(Path(sys.argv[1]).read_text())
    OUT.write_text(json.dumps(subset(source), indent=1, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(subset(source)['components']['schemas'])} schemas")
