"""What an API operation is to the pipeline: the parts that differ from one endpoint to the
next. `gateway.services.run` does the rest (auth, routing, admission, fallback, settle,
ledger) the same way for every operation.

An operation is a stateless object (one per endpoint, made once); everything about one
request lives on the `Call` it is handed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError, InvalidRequest

if TYPE_CHECKING:
    from gateway.cache import CachedAnswer
    from gateway.money import Cost
    from gateway.providers.base import ProviderAdapter
    from gateway.services import Call
    from gateway.snapshot import ModelSnap


@dataclass(slots=True)
class Answer:
    """What a view sends: a JSON body, or (`events` set) an async iterator of SSE bytes.
    `native`: the provider's own answer, when the request was passed through natively."""

    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    events: AsyncIterator[bytes] | None = None
    native: dict[str, Any] | None = None

    @property
    def streamed(self) -> bool:
        return self.events is not None


class Operation:
    """One endpoint, as the pipeline needs to know it. Subclasses override what differs."""

    endpoint: str = ""  # the ledger's name for it, e.g. "chat.completions"
    mode: str = "chat"  # the LanguageModel.mode it serves (chat | embedding)
    path: str = ""  # what a client calls, for messages

    # -- the request -----------------------------------------------------------------
    def parse(self, call: Call, data: Any) -> dict[str, Any]:
        """Validate the parsed JSON and return the body (raise InvalidRequest); may set
        `call.stream`."""
        raise NotImplementedError

    def estimate(self, call: Call) -> int:
        """The typical prompt token estimate (routing, rate limits, missing usage)."""
        raise NotImplementedError

    def input_upper_bound(self, call: Call) -> int:
        """Never fewer than the input tokens that will be billed: what the hold reserves."""
        raise NotImplementedError

    def max_tokens(self, call: Call) -> int | None:
        """The output tokens the request asked for at most (routing), or None."""
        return None

    def output_limits(self, call: Call, max_tokens: int | None) -> tuple[int, int | None]:
        """(output tokens the hold reserves, the cap sent upstream or None)."""
        return 0, None

    def fit_chain(self, call: Call, chain: list[ModelSnap]) -> list[ModelSnap]:
        """The routed chain, reduced to the models that can serve this endpoint. The model
        asked for must be one of them: called on the wrong endpoint, a 400 that says so."""
        first = chain[0]
        if first.mode != self.mode and call.requested_model == first.name:
            raise InvalidRequest(
                f"Model '{first.name}' is a{'n' if first.mode[0] in 'aeiou' else ''} "
                f"{first.mode} model; call {_path_for(first.mode)}, not {self.path}.",
                param="model",
                code="wrong_endpoint",
            )
        fitting = [m for m in chain if m.mode == self.mode]
        if not fitting:
            raise InvalidRequest(
                f"No model in the chain for '{call.requested_model}' serves {self.path}.",
                param="model",
                code="wrong_endpoint",
            )
        return fitting

    def cache_key(self, call: Call, chain: list[ModelSnap]) -> str | None:
        """The response cache's key for this request, or None when it is not cached."""
        return None

    # -- serving ---------------------------------------------------------------------
    def provider_request(
        self, call: Call, model: ModelSnap, adapter: ProviderAdapter, cap: int | None
    ) -> tuple[Any, tuple[str, str] | None]:
        """(the request for `adapter`, None) or (None, (parameter, why it cannot serve)).
        `cap` is the output cap for this model (None: the client's max tokens, or none)."""
        raise NotImplementedError

    async def serve(self, call: Call) -> Answer:
        """Run the fallback loop (services.attempt_models) and answer; settles the call."""
        raise NotImplementedError

    async def cached(self, call: Call, hit: CachedAnswer, cost: Cost) -> Answer:
        """A cache hit, as the client asked for it (JSON or a replayed stream)."""
        raise NotImplementedError

    def cacheable(self, call: Call, body: dict[str, Any]) -> bool:
        """Whether this whole answer may be stored under `call.cache_key`."""
        return True

    def client_chunk(self, call: Call, chunk: dict[str, Any]) -> dict[str, Any]:
        """A stream chunk as the client asked for it (as it came, by default)."""
        return chunk

    def ledger_content(self, call: Call) -> Any:
        """What the ledger stores of the request when the team keeps content."""
        return call.body.get("messages")

    # -- errors ----------------------------------------------------------------------
    def error_answer(self, error: GatewayError, headers: dict[str, str]) -> Answer:
        """The error in this endpoint's envelope (OpenAI's by default)."""
        return Answer(body=error.body(), headers={**error.headers, **headers}, status=error.status)


def _path_for(mode: str) -> str:
    return {"embedding": "/v1/embeddings"}.get(mode, "/v1/chat/completions")
