"""The one place for response-cache keys and TTLs.

A key is a hash of the request reduced to what can change the answer: two requests that
mean the same (keys in another order, a single text part instead of a string, a parameter
sent at its default value, max_tokens under either name) share a key; any other difference
gives another key. Keys are scoped to the team unless the team opted into the shared scope.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import redisurl
from gateway.providers.base import Usage
from gateway.snapshot import FeatureSnap, TeamSnap

PREFIX = "gw:cache:"
SHARED = "shared"
MAX_TTL_S = 30 * 86400

# Parameters whose absence means exactly their default value in OpenAI's API.
DEFAULTS: dict[str, Any] = {
    "temperature": 1,
    "top_p": 1,
    "n": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
    "parallel_tool_calls": True,
    "service_tier": "auto",
}
FLOAT_PARAMS = frozenset({"temperature", "top_p", "presence_penalty", "frequency_penalty"})
# Fields that never change the answer. (`service_tier` does: the answer names its tier.)
IGNORED = frozenset({"stream", "stream_options", "user", "metadata", "store"})


def _normalize_content(content: Any) -> Any:
    if isinstance(content, list) and len(content) == 1:
        part = content[0]
        if isinstance(part, dict) and part.get("type") == "text" and set(part) == {"type", "text"}:
            return part["text"]
    return content


def _normalize_message(message: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in message.items() if v is not None}
    if "content" in out:
        out["content"] = _normalize_content(out["content"])
    return out


def normalize(body: dict[str, Any], chain: tuple[str, ...]) -> dict[str, Any]:
    """The request as the cache sees it. `chain` is the model names that may serve it."""
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name in IGNORED or value is None or name == "model":
            continue
        if name in DEFAULTS and value == DEFAULTS[name]:
            continue
        if name in FLOAT_PARAMS and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)  # 2 and 2.0 mean the same temperature
        out[name] = value
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    if "max_completion_tokens" in out:
        out["max_tokens"] = out.pop("max_completion_tokens")
    out["messages"] = [_normalize_message(m) for m in body["messages"]]
    out["model"] = list(chain)
    return out


def _scope(team: TeamSnap) -> str:
    """The team's own scope (on Redis Cluster its slot's hash tag: gateway/redisurl.py), or
    the scope every team that opted into sharing reads."""
    if team.cache_scope == "shared":
        return SHARED
    return f"{{t{team.id}}}" if redisurl.CLUSTER else f"t{team.id}"


def outside_team_slot(key: str) -> bool:
    """Whether admission must look `key` up on its own round trip: a shared entry on a
    cluster lives in its own slot, which the team's admission script cannot read."""
    return redisurl.CLUSTER and key.startswith(PREFIX + SHARED + ":")


def key_for(*, team: TeamSnap, body: dict[str, Any], chain: tuple[str, ...]) -> str:
    scope = _scope(team)
    digest = hashlib.sha256(orjson.dumps(normalize(body, chain), option=orjson.OPT_SORT_KEYS))
    return f"{PREFIX}{scope}:{digest.hexdigest()}"


def embeddings_key_for(*, team: TeamSnap, body: dict[str, Any], chain: tuple[str, ...]) -> str:
    """An embeddings request's key: its input, its dimensions and the models that may serve
    it (the answer is kept as floats; `encoding_format` and `user` do not change it)."""
    scope = _scope(team)
    keyed = {"embed": body["input"], "dimensions": body.get("dimensions"), "model": list(chain)}
    digest = hashlib.sha256(orjson.dumps(keyed, option=orjson.OPT_SORT_KEYS))
    return f"{PREFIX}{scope}:e:{digest.hexdigest()}"


def ttl_for(*, header: str | None, feature: FeatureSnap | None, default: int) -> int:
    """Seconds to cache the answer: the X-Gateway-Cache-TTL header, else the feature's default.

    Raises ValueError for a header that is not a whole number of seconds.
    """
    if header is not None and header != "":
        ttl = int(header)
        if ttl < 0:
            raise ValueError("negative")
        return min(ttl, MAX_TTL_S)
    return feature.default_cache_ttl if feature else default


@dataclass(slots=True)
class CachedAnswer:
    body: dict[str, Any]  # a whole chat.completion, or an embeddings list (floats)
    usage: Usage
    model: str  # the model that served it
    provider: str

    def dumps(self) -> bytes:
        u = self.usage
        return orjson.dumps(
            {
                "body": self.body,
                "model": self.model,
                "provider": self.provider,
                "usage": [
                    u.input_tokens,
                    u.output_tokens,
                    u.cached_tokens,
                    u.cache_write_tokens,
                    u.reported,
                ],
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> CachedAnswer:
        data = orjson.loads(raw)
        i, o, c, w, reported = data["usage"]
        return cls(
            body=data["body"],
            usage=Usage(i, o, c, w, reported),
            model=data["model"],
            provider=data["provider"],
        )


def sampled(body: dict[str, Any]) -> bool:
    """Whether the answer is sampled: temperature above 0, or unset (OpenAI's default is 1)."""
    temperature = body.get("temperature")
    return temperature is None or temperature > 0


def may_cache(body: dict[str, Any], feature: FeatureSnap | None) -> bool:
    """A feature that keeps sampled answers out of the cache (`cache_sampled` off) caches only
    temperature-0 answers, so regenerate gets a new text. Without a feature: cached."""
    return feature is None or feature.cache_sampled or not sampled(body)


def cacheable(body: dict[str, Any], request: dict[str, Any] | None = None) -> bool:
    """Only whole answers are cached: not cut off mid tool call, not an error, and with all
    the request asked for. A request that shares the key (streamed or not: `stream` is not
    part of it) then never gets less than it asked: an upstream that ignored `logprobs`, or
    sent fewer choices than `n`, gives an answer that is served but not stored."""
    choices = body.get("choices") or []
    if not choices or any(c.get("finish_reason") not in ("stop", "length") for c in choices):
        return False
    if request is None:
        return True
    if len(choices) != (request.get("n") or 1):
        return False
    if request.get("logprobs"):
        for choice in choices:
            logprobs = choice.get("logprobs")
            if not isinstance(logprobs, dict):
                return False
            if not (logprobs.get("content") or logprobs.get("refusal")):
                return False
    return True


def queue_put(trip, key: str, answer: CachedAnswer, ttl: int) -> int:
    """Store a whole answer for `ttl` seconds, as part of a round trip (gateway/roundtrip.py).
    The pipeline reads it back in the admission script (gateway/admission.py ADMIT)."""
    return trip.add("SET", key, answer.dumps(), "EX", ttl)
