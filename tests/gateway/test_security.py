"""Security: rate-limited admin logins, a clean `check --deploy` and security headers in
production mode, provider secrets kept out of every answer, log line, ledger record, export
and admin page, and one team's key never seeing another team's cache or budgets."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.test import AsyncClient, Client

from gateway import ledger, loginguard, runtime
from gateway.models import Provider, UsageRecord
from tests.factories import make_budget, make_key, make_model, make_provider, make_team
from tests.processes import one_redis_only

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(settings.BASE_DIR)
HELLO = [{"role": "user", "content": "Say hello, please"}]
PROVIDER_SECRET = "sk-MARKER-provider-secret-0123456789abcdef"
LOGIN = "/admin/login/"
# As a TLS-terminating proxy says it: production mode would redirect plain HTTP to HTTPS.
HTTPS = {"X-Forwarded-Proto": "https"}


# --- admin logins -------------------------------------------------------------------------


@pytest.fixture
def admin_user(django_user_model, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast tests
    return django_user_model.objects.create_superuser("root", "root@example.com", "right-pw-123")


def login(client: Client, password: str, username: str = "root") -> int:
    return client.post(LOGIN, {"username": username, "password": password}).status_code


def test_the_sixth_failed_login_within_15_minutes_is_429_even_with_the_right_password(
    admin_user,
):
    client = Client(headers=HTTPS)
    assert [login(client, "wrong") for _ in range(5)] == [200] * 5
    response = client.post(LOGIN, {"username": "root", "password": "right-pw-123"})
    assert response.status_code == 429
    assert response["Retry-After"] == str(15 * 60)
    assert b"Too many failed login attempts" in response.content
    assert "_auth_user_id" not in client.session


def test_failed_logins_of_one_username_do_not_lock_out_another(admin_user, django_user_model):
    django_user_model.objects.create_superuser("ops", "ops@example.com", "ops-pw-456")
    client = Client(headers=HTTPS)
    for _ in range(5):
        login(client, "wrong")
    assert login(client, "ops-pw-456", username="ops") == 302


def test_a_successful_login_clears_the_failure_count(admin_user):
    client = Client(headers=HTTPS)
    for _ in range(4):
        login(client, "wrong")
    assert login(client, "right-pw-123") == 302
    key_client = Client(headers=HTTPS)
    assert [login(key_client, "wrong") for _ in range(5)] == [200] * 5
    assert login(key_client, "wrong") == 429


@one_redis_only
async def test_logins_through_the_asgi_stack_are_limited_too(admin_user):
    client = AsyncClient()
    for _ in range(loginguard.MAX_FAILURES):
        response = await client.post(LOGIN, {"username": "root", "password": "wrong"}, secure=True)
        assert response.status_code == 200
    response = await client.post(
        LOGIN, {"username": "root", "password": "right-pw-123"}, secure=True
    )
    assert response.status_code == 429
    keys = [k for k in runtime.sync_redis().keys("*") if loginguard.PREFIX.encode() in k]
    assert len(keys) == 1
    assert cache.ttl(keys[0].decode().split(":", 2)[-1]) > 0


# --- production mode ------------------------------------------------------------------------


def production_env() -> dict[str, str]:
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "p7Q2-vX9#tL4@mR8^wZ1!bN6&cF3*hJ5+kS0_dG2=yU7~eA9?qW4",
        "DATABASE_URL": os.environ.get("DATABASE_URL") or "postgres://nobody@127.0.0.1:1/none",
        "REDIS_URL": os.environ.get("REDIS_URL") or "redis://127.0.0.1:1/0",
        "ALLOWED_HOSTS": "gateway.example.com",
        "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
    }
    env.pop("METRICS_TOKEN", None)
    return env


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=production_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_in_production_mode():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=production_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The two silenced: HSTS for subdomains and preload, off by default (operations.md, TLS).
    assert "System check identified no issues (2 silenced)." in result.stdout
    assert "WARNINGS" not in result.stderr


_HEADERS = """
import django, json
django.setup()
from django.test import Client
client = Client(HTTP_HOST="gateway.example.com")
secure = client.get("/healthz", secure=True)
plain_api = client.get("/v1/models")
plain_health = client.get("/healthz")
print(json.dumps({
    "secure": [secure.status_code, dict(secure.headers)],
    "plain_api": [plain_api.status_code, plain_api.headers.get("Location")],
    "plain_health": plain_health.status_code,
}))
"""


def test_production_responses_carry_the_security_headers():
    result = run_python(_HEADERS)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    status, headers = out["secure"]
    assert status == 200
    assert (
        headers["Strict-Transport-Security"] == "max-age=31536000"
    )  # this host only, no preload by default
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert out["plain_api"] == [301, "https://gateway.example.com/v1/models"]
    assert out["plain_health"] == 200  # probes from inside the network skip the redirect


# --- provider secrets -------------------------------------------------------------------


def echo_everything(request: httpx.Request) -> httpx.Response:
    """A provider that echoes the credentials it was sent in its error messages."""
    sent = {k: v for k, v in request.headers.items()}
    status = 400 if b'"model":"echo-400"' in request.content else 500
    body = {
        "type": "error",
        "error": {
            "message": f"rejected; headers were {sent}",
            "type": "invalid_request_error",
            "param": sent.get("authorization") or sent.get("x-api-key"),
            "code": None,
        },
    }
    return httpx.Response(status, content=orjson.dumps(body))


@pytest.fixture
def echoing_provider(monkeypatch):
    monkeypatch.setenv("LEAK_TEST_API_KEY", PROVIDER_SECRET)
    transport = httpx.MockTransport(echo_everything)
    monkeypatch.setattr(runtime, "http_client", lambda: httpx.AsyncClient(transport=transport))
    team = make_team("leaky")
    _, secret = make_key(team)
    for kind in ("openai", "anthropic", "openai_compatible"):
        provider = make_provider(
            f"echo-{kind}",
            kind=kind,
            base_url="http://upstream.test/v1",
            api_key_env="LEAK_TEST_API_KEY",
            options={},
        )
        make_model(f"{kind}-500", provider, upstream_id="echo-500")
        make_model(f"{kind}-400", provider, upstream_id="echo-400")
    return secret


@pytest.mark.parametrize("kind", ["openai", "anthropic", "openai_compatible"])
@pytest.mark.parametrize(("status", "expected"), [("500", 502), ("400", 400)])
@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_echoing_its_key_never_leaks_it(
    gateway_server, echoing_provider, caplog, kind, status, expected, stream
):
    caplog.set_level(logging.DEBUG)
    response = httpx.post(
        f"{gateway_server.base_url}/chat/completions",
        json={"model": f"{kind}-{status}", "messages": HELLO, "stream": stream},
        headers={**HTTPS, "Authorization": f"Bearer {echoing_provider}"},
        timeout=10,
    )
    assert response.status_code == expected
    message = response.json()["error"]["message"]
    if status == "400":  # the caller's fault: its message is passed on, scrubbed
        assert "rejected; headers were" in message  # it did echo
    else:  # the client reads a generic reason; the ledger keeps the (scrubbed) detail
        assert "upstream error 500" in message
        assert "rejected; headers were" not in message
    assert PROVIDER_SECRET not in response.text
    assert PROVIDER_SECRET not in str(response.headers)
    assert PROVIDER_SECRET not in caplog.text
    ledger.drain()
    record = UsageRecord.objects.get()
    assert record.http_status == expected
    assert PROVIDER_SECRET not in json.dumps(record.attempt_log)
    assert PROVIDER_SECRET not in str(record.error_type)
    if status == "500":
        assert "rejected; headers were" in record.attempt_log[0]["detail"]


def test_exportconfig_and_admin_pages_never_show_a_provider_secret(echoing_provider, admin_user):
    out = io.StringIO()
    call_command("exportconfig", stdout=out)
    assert "LEAK_TEST_API_KEY" in out.getvalue()  # the variable's name, never its value
    assert PROVIDER_SECRET not in out.getvalue()
    client = Client(headers=HTTPS)
    client.force_login(admin_user)
    provider = Provider.objects.get(name="echo-openai")
    for page in (
        "/admin/gateway/provider/",
        f"/admin/gateway/provider/{provider.pk}/change/",
        "/admin/gateway/languagemodel/",
    ):
        response = client.get(page)
        assert response.status_code == 200, page
        assert PROVIDER_SECRET.encode() not in response.content, page


# --- isolation between teams ----------------------------------------------------------------


@pytest.fixture
def two_teams():
    make_model("sim-model", make_provider("sim"))
    teams = {}
    for name, limit in (("team-a", 5), ("team-b", 7)):
        team = make_team(name)
        _, secret = make_key(team)
        budget = make_budget(team, daily_limit_usd=limit)
        teams[name] = {"team": team, "secret": secret, "budget": budget}
    return teams


def chat(server, secret: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": "sim-model", "messages": HELLO},
        headers={**HTTPS, "Authorization": f"Bearer {secret}"},
        timeout=10,
    )


@one_redis_only
def test_a_team_never_gets_another_teams_cached_answer(gateway_server, two_teams, redis_sync):
    a, b = two_teams["team-a"], two_teams["team-b"]
    assert chat(gateway_server, a["secret"]).headers["X-Gateway-Cache"] == "miss"
    assert chat(gateway_server, a["secret"]).headers["X-Gateway-Cache"] == "hit"
    assert chat(gateway_server, b["secret"]).headers["X-Gateway-Cache"] == "miss"
    keys = sorted(k.decode() for k in redis_sync.keys("gw:cache:*"))
    assert [k.split(":")[2] for k in keys] == sorted([f"t{a['team'].id}", f"t{b['team'].id}"])


def test_a_key_sees_only_its_own_teams_budgets(gateway_server, two_teams):
    for name, other in (("team-a", "team-b"), ("team-b", "team-a")):
        response = httpx.get(
            f"{gateway_server.base_url}/budget",
            headers={**HTTPS, "Authorization": f"Bearer {two_teams[name]['secret']}"},
        )
        assert response.status_code == 200
        body = response.json()
        assert body["team"] == name
        assert [b["id"] for b in body["budgets"]] == [two_teams[name]["budget"].id]
        assert other not in response.text
