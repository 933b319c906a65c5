"""Issue 16, Medium 3: the admin login answered 500 while Redis was down, locking operators out
during the very outage they needed to fix. The guard now fails open to the database: the
attempts are counted in `LoginAttempts` rows (atomically, under a row lock), with a WARNING in
the log, so the limit still holds and the right password still logs in.

Reproduced as it happens: the gateway served by uvicorn on its own redis-server, which the
test stops; then the real login form, with its CSRF token.
"""

from __future__ import annotations

import httpx
import pytest
from django.contrib.auth.models import User

from gateway import loginguard
from gateway.models import LoginAttempts
from tests.processes import requires_postgres, requires_redis_server, wait_for
from tests.security.support import login_form, post_login

pytestmark = [requires_postgres, requires_redis_server, pytest.mark.django_db(transaction=True)]
PASSWORD = "the-right-pw-2718"


def test_the_admin_login_works_and_stays_limited_while_redis_is_down(gateways, own_redis):
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    (gateway,) = gateways(1, redis_url=own_redis.url)
    own_redis.stop()

    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        token = login_form(http)
        # The right password logs in: no 500.
        response = post_login(http, token, "ops", PASSWORD)
        assert response.status_code == 302, (response.status_code, gateway.output())
        assert "sessionid" in http.cookies

    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        token = login_form(http)
        statuses = [
            post_login(http, token, "root", f"wrong-{i}").status_code
            for i in range(loginguard.MAX_FAILURES)
        ]
        assert statuses == [200] * loginguard.MAX_FAILURES, gateway.output()
        # Counted in the database: the limit holds without Redis, the right password too.
        response = post_login(http, token, "root", PASSWORD)
        assert response.status_code == 429
        assert "sessionid" not in http.cookies

    counts = list(LoginAttempts.objects.values_list("count", flat=True))
    assert sorted(counts) == [loginguard.MAX_FAILURES + 1]  # ops' row was cleared on success
    wait_for(
        lambda: "login guard: Redis unavailable" in gateway.output(),
        timeout=5,
        what="the WARNING about the fallback in the log",
    )
    assert "WARNING" in gateway.output()


def test_the_database_count_is_atomic_under_parallel_attempts():
    """The fallback holds against the parallel attack too: 20 threads counting one key each
    get a different number, so exactly MAX_FAILURES of them are let through."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from django.db import connection

    start = Barrier(20)

    def count(_: int) -> int:
        try:
            start.wait()
            return loginguard._count_in_database("login-fail:parallel")
        finally:
            connection.close()

    with ThreadPoolExecutor(20) as pool:
        numbers = sorted(pool.map(count, range(20)))
    assert numbers == list(range(1, 21))
    assert sum(n <= loginguard.MAX_FAILURES for n in numbers) == loginguard.MAX_FAILURES
    assert LoginAttempts.objects.get(key="login-fail:parallel").count == 20
