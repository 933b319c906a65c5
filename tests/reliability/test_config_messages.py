"""A key revoked in the admin of one gateway process is refused by another at once: the admin's
save bumps the config version in Redis and publishes it, and every worker's subscriber
(gateway/configversion.py `watch`) makes its process read that key again. The config TTL is
set to ten minutes here, so only the message can explain the refusal. The client is the
official OpenAI SDK, the admin is driven through its login form."""

from __future__ import annotations

import re
import time

import httpx
import openai
import pytest

from gateway import configversion, runtime
from tests.factories import make_key, make_team
from tests.processes import (
    requires_postgres,
    requires_real_redis,
    requires_redis_server,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_real_redis,
    pytest.mark.django_db(transaction=True),
]
PASSWORD = "correct horse battery staple 42"
STEADY = {"GATEWAY_CONFIG_TTL_S": "600", "GATEWAY_CONFIG_FULL_RELOAD_S": "600"}


def sign_in(site: str) -> httpx.Client:
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)
    browser = httpx.Client(base_url=site, follow_redirects=True)
    form = browser.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]
    home = browser.post(
        "/admin/login/?next=/admin/",
        data={"username": "ops", "password": PASSWORD, "csrfmiddlewaretoken": token,
              "next": "/admin/"},
        headers={"Referer": f"{site}/admin/login/"},
    )  # fmt: skip
    assert home.status_code == 200 and str(home.url).endswith("/admin/"), home.text[:300]
    return browser


def lists_models(base_url: str, secret: str) -> bool:
    """True if the key is accepted, False if refused as revoked (anything else fails)."""
    client = openai.OpenAI(base_url=base_url, api_key=secret, max_retries=0)
    try:
        client.models.list()
    except openai.AuthenticationError as exc:
        assert exc.code == "revoked_api_key", exc
        return False
    return True


def test_a_key_revoked_in_one_process_admin_is_refused_by_the_other_at_once(gateways):
    team = make_team("acme")
    key, secret = make_key(team)
    admin_side, other = gateways(2, **STEADY)
    assert lists_models(other.base_url, secret)  # the other process holds the key, active
    browser = sign_in(admin_side.url)
    page = browser.get(f"/admin/gateway/apikey/{key.pk}/revoke/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    done = browser.post(
        f"/admin/gateway/apikey/{key.pk}/revoke/",
        data={"csrfmiddlewaretoken": token},
        headers={"Referer": f"{admin_side.url}/admin/gateway/apikey/{key.pk}/revoke/"},
    )
    assert done.status_code == 200 and "Revoked 1 key(s)" in done.text
    revoked = time.monotonic()
    wait_for(
        lambda: not lists_models(other.base_url, secret),
        timeout=5,
        what="the other process to refuse the revoked key (its TTL is 600 s)",
    )
    assert time.monotonic() - revoked < 5
    assert not lists_models(admin_side.base_url, secret)


def test_a_missed_message_is_caught_by_the_version_poll(gateways):
    """The version is bumped without a message (as if it was lost): the subscriber's poll
    of the version, every CONFIG_TTL_S, still makes the process read the change."""
    team = make_team("acme")
    key, secret = make_key(team)
    (gateway,) = gateways(1, GATEWAY_CONFIG_TTL_S="1", GATEWAY_CONFIG_FULL_RELOAD_S="600")
    assert lists_models(gateway.base_url, secret)
    type(key).objects.filter(pk=key.pk).update(revoked_at=key.created_at)  # no signal
    redis = runtime.sync_redis()
    number = redis.incr(configversion.VERSION_KEY)
    redis.zadd(configversion.CHANGES_KEY, {f"{number}|k:{key.pk}": number})  # no PUBLISH
    wait_for(
        lambda: not lists_models(gateway.base_url, secret),
        timeout=10,
        what="the version poll to catch the unannounced change",
    )


@requires_redis_server
def test_messages_are_heard_again_after_a_redis_restart(gateways, own_redis):
    """Redis restarts empty (no persistence): the subscriber reconnects by itself, and the
    next change, published as version 1 of a new epoch, reaches the process."""
    team = make_team("acme")
    key, secret = make_key(team)
    (gateway,) = gateways(1, redis_url=own_redis.url, **STEADY)
    assert lists_models(gateway.base_url, secret)
    own_redis.stop()
    own_redis.start()
    wait_for(
        lambda: own_redis.client().pubsub_numsub(configversion.CHANNEL)[0][1] >= 1,
        timeout=15,
        what="the subscriber to reconnect to the restarted Redis",
    )
    type(key).objects.filter(pk=key.pk).update(revoked_at=key.created_at)
    own_redis.client().eval(
        configversion.BUMP, 3, configversion.VERSION_KEY, configversion.EPOCH_KEY,
        configversion.CHANGES_KEY, "new-epoch", f"k:{key.pk}", configversion.CHANGES_KEPT,
        configversion.CHANNEL,
    )  # fmt: skip
    wait_for(
        lambda: not lists_models(gateway.base_url, secret),
        timeout=5,
        what="the process to hear the change on the restarted Redis (its TTL is 600 s)",
    )
