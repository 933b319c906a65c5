"""Demo traffic sent through the gateway's own HTTP API, in process (no server, no network).

Eight features with their typical prompts and models, popular prompts repeated so the cache
answers them, a provider outage in the middle (its simulated failure rate set to 1, then
restored) so requests fall back and its circuit opens, and a runaway agent: a
`research-agent` loop that repeats its step until its small hard budget refuses it (alerts
fire at 50 % and 80 %), and keeps retrying, refused each time.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings

from gateway.models import Provider
from gateway.snapshot import store


@dataclass(frozen=True, slots=True)
class FeatureTraffic:
    name: str
    model: str  # "auto" lets the gateway's routes choose
    priority: str
    max_tokens: int | None
    prompts: tuple[str, ...]
    repeat_share: float  # share of requests that reuse a popular prompt (cache hits)


FEATURES: tuple[FeatureTraffic, ...] = (
    FeatureTraffic(
        "chatbot",
        "auto",
        "high",
        400,
        (
            "How do I reset my password?",
            "What are your opening hours?",
            "Can I change the delivery address of an order?",
            "How do I cancel my subscription?",
        ),
        0.5,
    ),
    FeatureTraffic(
        "summarization",
        "gpt-4o-mini",
        "medium",
        300,
        (
            "Summarise this meeting: the team agreed to ship the billing page on Friday, "
            "postpone the mobile redesign and hire a second on-call engineer.",
            "Summarise the incident report: a bad deploy raised error rates for 14 minutes.",
        ),
        0.3,
    ),
    FeatureTraffic(
        "code-generation",
        "claude-sonnet-4",
        "high",
        800,
        (
            "Write a Python function that merges two sorted lists.",
            "Write a SQL query returning the ten customers with the highest spend.",
        ),
        0.2,
    ),
    FeatureTraffic(
        "moderation",
        "auto",
        "low",
        16,
        (
            "Is this message abusive? 'You are all wonderful, thanks for the help!'",
            "Is this message abusive? 'Buy cheap watches now at this link'",
        ),
        0.6,
    ),
    FeatureTraffic(
        "search",
        "gpt-4o-mini",
        "medium",
        200,
        (
            "refund policy",
            "shipping to canada",
            "api rate limits",
            "reset password",
        ),
        0.8,
    ),
    FeatureTraffic(
        "classification",
        "auto",
        "low",
        8,
        (
            "Classify the ticket: 'The app crashes when I upload a photo.'",
            "Classify the ticket: 'Please send me last month's invoice.'",
        ),
        0.5,
    ),
    FeatureTraffic(
        "translation",
        "auto",
        "medium",
        200,
        (
            "Translate to French: 'Your order has shipped and will arrive on Tuesday.'",
            "Translate to German: 'Thank you for your patience.'",
        ),
        0.4,
    ),
    FeatureTraffic(
        "data-extraction",
        "claude-3-5-haiku",
        "medium",
        150,
        (
            "Extract name, date and amount as JSON: 'Invoice from ACME Ltd, 3 March, 1,240.00 EUR'",
            "Extract the address as JSON: 'Ship to 12 Rue de Rivoli, 75001 Paris'",
        ),
        0.4,
    ),
)
CONCURRENCY = 8

# The runaway: an agent loop with no stop condition on a strong model, re-running the same
# research step with a fresh step number (so the cache cannot answer it). Sized for the demo's
# $0.04/day hard budget on `research-agent`: each step costs about a thirtieth of it and is
# reserved at its worst case (about five times that), so some 25 steps are served, the 50 %
# and 80 % alerts fire, and then every further step is refused.
RUNAWAY_FEATURE = "research-agent"
RUNAWAY_MODEL = "claude-sonnet-4"
RUNAWAY_STEPS = 50
RUNAWAY_MAX_TOKENS = 100
RUNAWAY_PROMPT = (
    "You are a research agent. Compare the pricing pages of every LLM provider with "
    "yesterday's copies and report any change. Sources: "
    + ", ".join(f"pricing page {i}" for i in range(1, 61))
    + ". You are not yet certain that nothing changed: fetch every source again."
)


@dataclass(frozen=True, slots=True)
class Caller:
    team: str
    secret: str
    features: tuple[str, ...]
    runaway: bool = False  # the team has the `research-agent` feature: run the loop


def request_body(traffic: FeatureTraffic, rng: random.Random) -> dict:
    if rng.random() < traffic.repeat_share:
        prompt = rng.choice(traffic.prompts)
    else:
        prompt = f"{rng.choice(traffic.prompts)} (case {rng.randrange(10**9)})"
    body: dict = {"model": traffic.model, "messages": [{"role": "user", "content": prompt}]}
    if traffic.max_tokens:
        body["max_tokens"] = traffic.max_tokens
    return body


def _set_failure_rate(provider_name: str, rate: float | None) -> float | None:
    """Set (None: remove) a simulated provider's failure rate; returns the previous one."""
    provider = Provider.objects.get(name=provider_name)
    previous = provider.options.get("failure_rate")
    if rate is None:
        provider.options.pop("failure_rate", None)
    else:
        provider.options["failure_rate"] = rate
    provider.save(update_fields=["options"])
    store().invalidate()
    return previous


async def send(client: httpx.AsyncClient, caller: Caller, traffic: FeatureTraffic, rng) -> str:
    """One chat completion; returns the outcome ("hit", "miss", "fallback" or the status)."""
    response = await client.post(
        "/v1/chat/completions",
        json=request_body(traffic, rng),
        headers={
            "Authorization": f"Bearer {caller.secret}",
            "X-Gateway-Feature": traffic.name,
            "X-Gateway-Priority": traffic.priority,
        },
    )
    if response.status_code != 200:
        return str(response.status_code)
    if int(response.headers.get("x-gateway-attempts", "1")) > 1:
        return "fallback"
    return response.headers.get("x-gateway-cache", "miss")


async def _phase(client, callers: list[Caller], count: int, rng, tally: Counter) -> None:
    by_name = {t.name: t for t in FEATURES}
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        caller = rng.choice(callers)
        traffic = by_name[rng.choice(caller.features)]
        async with gate:
            tally[await send(client, caller, traffic, rng)] += 1

    await asyncio.gather(*(one() for _ in range(count)))


def gateway_base_url(allowed_hosts: list[str]) -> str:
    """An https URL on a host Django accepts: https so that a production configuration's
    redirect to https does not apply, a listed host so that ALLOWED_HOSTS does not refuse it."""
    hosts = [h.lstrip(".") for h in allowed_hosts if h not in {"*", ""}]
    return f"https://{hosts[0] if hosts else 'localhost'}"


def runaway_body(step: int) -> dict:
    """The agent's request at `step`: the same task, one more time."""
    content = f"{RUNAWAY_PROMPT} (step {step + 1})"
    messages = [{"role": "user", "content": content}]
    return {"model": RUNAWAY_MODEL, "messages": messages, "max_tokens": RUNAWAY_MAX_TOKENS}


async def runaway_loop(client: httpx.AsyncClient, caller: Caller) -> Counter:
    """A buggy agent: one step after another, with no stop condition; a refusal does not stop
    it either, it retries the same step. Returns {"served": n, "refused": n}."""
    outcome: Counter = Counter()
    step = 0
    for _ in range(RUNAWAY_STEPS):
        response = await client.post(
            "/v1/chat/completions",
            json=runaway_body(step),
            headers={
                "Authorization": f"Bearer {caller.secret}",
                "X-Gateway-Feature": RUNAWAY_FEATURE,
            },
        )
        if response.status_code == 200:
            outcome["served"] += 1
            step += 1
        else:
            outcome["refused" if response.status_code == 429 else str(response.status_code)] += 1
    return outcome


async def run(
    *,
    app,
    callers: list[Caller],
    requests: int,
    outage_provider: str | None,
    seed: int = 7,
    runaway: Counter | None = None,
) -> Counter:
    """Send `requests` requests in three phases: normal, provider outage, recovered; then the
    runaway loop of each caller whose team has it (its outcome added to `runaway`)."""
    rng = random.Random(seed)
    tally: Counter = Counter()
    transport = httpx.ASGITransport(app=app)
    base_url = gateway_base_url(settings.ALLOWED_HOSTS)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        normal, outage = requests * 5 // 10, requests * 3 // 10
        await _phase(client, callers, normal, rng, tally)
        if outage_provider:
            previous = await sync_to_async(_set_failure_rate)(outage_provider, 1.0)
            try:
                await _phase(client, callers, outage, rng, tally)
            finally:
                await sync_to_async(_set_failure_rate)(outage_provider, previous)
        else:
            normal += outage
        await _phase(client, callers, requests - normal - outage, rng, tally)
        for caller in callers:
            if caller.runaway:
                loop = await runaway_loop(client, caller)
                if runaway is not None:
                    runaway.update(loop)
    return tally
