"""What the attack tests share: a team with a key and a simulated model, served by a real
uvicorn process (tests.processes.GatewayProcess) when the finding needs PostgreSQL."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import make_budget, make_key, make_model, make_provider, make_team


def chat(model: str = "sim-model", content: str = "hi") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def bearer(secret: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **headers}


def setup_team(name: str = "acme", *, model: str = "sim-model", **team_options) -> str:
    """A team with a budget, a key (returned) and a priced simulated model."""
    team = make_team(name, **team_options)
    make_budget(team, daily_limit_usd=100)
    if not _exists(model):
        make_model(model, make_provider(f"sim-{model}"), context_window=8_000_000)
    return make_key(team)[1]


def _exists(model: str) -> bool:
    from gateway.models import LanguageModel

    return LanguageModel.objects.filter(name=model).exists()


@pytest.fixture
def asgi_client():
    """Production's ASGI app (API paths, then the site), in process, without its lifespan."""
    from gatewaysite.asgi import http_application

    transport = httpx.ASGITransport(app=http_application)
    return httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=30)
