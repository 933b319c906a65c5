"""Issue 16, High: an admin could read any environment variable. A provider pointing at a
host the admin controls, with `api_key_env: SECRET_KEY`, sent Django's secret key as the
Bearer token of its first call. Providers may now name only the variables an operator
allowed (GATEWAY_PROVIDER_KEY_VARS, default *_API_KEY), never the gateway's own settings:
refused by the admin form, by importconfig, and at call time for a row written around both.
"""

from __future__ import annotations

import io
import re
from contextlib import closing
from html import unescape

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from gateway import keyvars
from gateway.models import Provider
from tests.factories import make_key, make_model, make_team
from tests.processes import requires_postgres
from tests.security.support import signed_in

# What the served gateway's SECRET_KEY is (tests/processes.py GatewayProcess).
SERVED_SECRET_KEY = "test-secret"
ADMIN_PASSWORD = "admin-pw-4711"
HELLO = {"model": "gpt-leak", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _admin() -> None:
    User.objects.create_superuser("root", "root@example.com", ADMIN_PASSWORD)


def _add_provider(http: httpx.Client, base_url: str, api_key_env: str) -> httpx.Response:
    page = http.get("/admin/gateway/provider/add/")
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return http.post(
        "/admin/gateway/provider/add/",
        data={
            "csrfmiddlewaretoken": token,
            "name": "attacker",
            "kind": "openai",
            "base_url": base_url,
            "api_key_env": api_key_env,
            "connect_timeout": "5",
            "read_timeout": "10",
            "enabled": "on",
            "options": "{}",
        },
    )


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_the_admin_form_refuses_a_provider_that_names_secret_key(gateways, openai_server):
    _admin()
    (gateway,) = gateways(1)
    with closing(signed_in(gateway.url, "root", ADMIN_PASSWORD)) as http:
        for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
            response = _add_provider(http, openai_server.base_url, name)
            assert response.status_code == 200, f"{name}: the form was accepted"
            text = unescape(response.text)
            assert "Please correct the error below." in text
            assert f"{name} holds one of the gateway's own settings" in text
        response = _add_provider(http, openai_server.base_url, "SOME_OTHER_TOKEN")
        assert response.status_code == 200
        assert "not allowed as a provider key variable" in unescape(response.text)
        assert "*_API_KEY (GATEWAY_PROVIDER_KEY_VARS)" in unescape(response.text)
        assert not Provider.objects.exists()
        # An allowed name is accepted: the admin still works for honest providers.
        assert _add_provider(http, openai_server.base_url, "TEST_OPENAI_API_KEY").status_code == 302
    assert Provider.objects.get(name="attacker").api_key_env == "TEST_OPENAI_API_KEY"
    assert openai_server.requests == []


@pytest.mark.django_db
def test_importconfig_refuses_secret_key(tmp_path):
    config = tmp_path / "attack.yaml"
    config.write_text(
        "providers:\n"
        "  - {name: attacker, kind: openai, base_url: http://127.0.0.1:9/v1,"
        " api_key_env: SECRET_KEY}\n"
    )
    with pytest.raises(CommandError) as refused:
        call_command("importconfig", str(config), stdout=io.StringIO())
    message = str(refused.value)
    assert "providers[0] (attacker).api_key_env: " in message
    assert "SECRET_KEY holds one of the gateway's own settings" in message
    assert "Nothing was imported." in message
    assert not Provider.objects.exists()


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_provider_row_written_around_the_checks_never_sends_the_secret(gateways, openai_server):
    """A row from before the upgrade, or written by SQL: refused again when it is used."""
    provider = Provider.objects.create(  # no full_clean: as an old row or an UPDATE would be
        name="attacker",
        kind="openai",
        base_url=openai_server.base_url,
        api_key_env="SECRET_KEY",
        options={},
    )
    make_model("gpt-leak", provider)
    _, secret = make_key(make_team("acme"))
    (gateway,) = gateways(1)
    response = httpx.post(
        gateway.base_url + "/chat/completions",
        json=HELLO,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )
    seen = [r.headers.get("authorization", "") for r in openai_server.requests]
    assert not any(SERVED_SECRET_KEY in value for value in seen), seen
    assert openai_server.requests == []  # refused before anything is sent
    assert response.status_code == 502, response.text
    assert SERVED_SECRET_KEY not in response.text
    assert "X-Request-ID" in response.headers or "x-request-id" in response.headers


@pytest.mark.parametrize(
    "name",
    ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE",
     "AWS_SECRET_ACCESS_KEY", "MANAGER_PASSWORD", "STATIC_ROOT", "METRICS_TOKEN",
     "GATEWAY_CONFIG_TTL_S", "EMAIL_HOST", "secret_key", "X=Y", "A B", "AWS_API_KEY",
     "DATABASE_API_KEY"],
)  # fmt: skip
def test_no_pattern_allows_the_denied_names(settings, name):
    settings.GATEWAY_PROVIDER_KEY_VARS = ["*"]
    assert not keyvars.is_allowed(name)


def test_the_default_allows_names_ending_in_api_key_only(settings):
    assert keyvars.is_allowed("OPENAI_API_KEY")
    assert keyvars.is_allowed("")  # no key at all
    assert not keyvars.is_allowed("OPENAI_TOKEN")
    settings.GATEWAY_PROVIDER_KEY_VARS = "*_API_KEY, VLLM_TOKEN"
    assert keyvars.is_allowed("VLLM_TOKEN")
