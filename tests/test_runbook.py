"""The runbook's promises that a test can hold: one set of process flags in the Procfile, the
README and docs/operations.md; HSTS without preload by default; the TLS proxy's
X-Forwarded-Proto trusted (docs/operations.md, "Runbook")."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.processes import GatewayProcess, requires_postgres, requires_real_redis

ROOT = Path(__file__).resolve().parents[1]


def web_flags() -> dict[str, str]:
    web = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    return dict(re.findall(r"(--workers|--timeout-graceful-shutdown) (\S+)", web))


def test_the_procfile_readme_and_runbook_give_the_same_uvicorn_flags():
    flags = web_flags()
    assert flags == {"--workers": "${WEB_CONCURRENCY:-2}", "--timeout-graceful-shutdown": "130"}
    for doc in ("README.md", "docs/operations.md"):
        commands = [line for line in (ROOT / doc).read_text().splitlines()
                    if "uvicorn gatewaysite.asgi:application" in line]  # fmt: skip
        assert commands, f"{doc} shows no uvicorn command"
        for command in commands:
            assert (
                dict(re.findall(r"(--workers|--timeout-graceful-shutdown) (\S+)", command)) == flags
            ), f"{doc}: {command}"


@pytest.mark.slow
@requires_postgres
@requires_real_redis
@pytest.mark.django_db(transaction=True)
def test_behind_the_tls_proxy_hsts_is_for_this_host_only_and_plain_http_is_redirected(
    tmp_path, settings
):
    gateway = GatewayProcess(redis_url=settings.REDIS_URL, log_dir=tmp_path, DEBUG="0",
                             ALLOWED_HOSTS="gateway.example.com", LOG_FORMAT="plain")  # fmt: skip
    try:
        gateway.wait_ready(timeout=60)
        host = {"Host": "gateway.example.com"}
        # What the proxy sends for a client's HTTPS request: served, with HSTS.
        https = httpx.get(gateway.url + "/api/schema/",
                          headers={**host, "X-Forwarded-Proto": "https"})  # fmt: skip
        assert https.status_code == 200
        assert https.headers["Strict-Transport-Security"] == "max-age=31536000"
        # A plain-HTTP request that reached the proxy: sent to HTTPS.
        plain = httpx.get(gateway.url + "/api/schema/",
                          headers={**host, "X-Forwarded-Proto": "http"})  # fmt: skip
        assert plain.status_code == 301
        assert plain.headers["Location"] == "https://gateway.example.com/api/schema/"
    finally:
        gateway.stop()


def test_the_blank_lines_of_a_copied_env_example_keep_the_defaults():
    """`.env.example` has `STATIC_ROOT=` and `SQLITE_PATH=`: loaded as they are (`set -a; .
    ./.env`), they must not make the current directory the static root."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "STATIC_ROOT": "",
        "SQLITE_PATH": "",
        "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
    }
    env.pop("DATABASE_URL", None)
    code = (
        "from django.conf import settings as s;"
        " print(s.STATIC_ROOT); print(s.DATABASES['default']['NAME'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [str(ROOT / "staticfiles"), str(ROOT / "db.sqlite3")]


def test_beat_starts_on_a_fresh_checkout_whose_state_folder_does_not_exist(tmp_path):
    """The Procfile's beat, with CELERY_BEAT_SCHEDULE_FILENAME in a folder not made yet (a
    fresh checkout has no var/): it makes the folder and keeps running."""
    import os
    import subprocess
    import sys
    import time

    state = tmp_path / "var" / "celerybeat-schedule"
    env = {**os.environ, "CELERY_BEAT_SCHEDULE_FILENAME": str(state)}
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        env.pop(name, None)  # the embedded mode: beat sends to the in-memory broker
    log = tmp_path / "beat.log"
    with log.open("wb") as out:
        command = [sys.executable, "-m", "celery", "-A", "gatewaysite", "-q", "beat"]
        beat = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 30
            while not list(state.parent.glob("celerybeat-schedule*")) and beat.poll() is None:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            time.sleep(2)
            assert beat.poll() is None, log.read_text()
        finally:
            beat.terminate()
            beat.wait(20)
    assert "FileNotFoundError" not in log.read_text()
