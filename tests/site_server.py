"""The site as the README serves it, for the tests of what a browser gets: uvicorn with the
Makefile's and the Procfile's options (several workers, uvloop, httptools) as a subprocess,
with DEBUG=1 (`make run`) or DEBUG=0 (production, after `collectstatic`).

The server runs in the test's mode. On the embedded defaults it is embedded too, on its own
SQLite file (an in-memory test database cannot be shared with another process), migrated by
`manage.py migrate`. Against PostgreSQL it reads the pytest test database, so the test needs
`transactional_db` (the `site` fixture asks for it), and the test's Redis.

Production's https redirect is turned off (SECURE_SSL_REDIRECT=0): these servers speak plain
http on loopback, as behind a TLS-terminating proxy that sets X-Forwarded-Proto.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.processes import ON_POSTGRES, ROOT, GatewayProcess, shared_database_url

# The Makefile's `serve` and the Procfile's `web`, minus host and port.
UVICORN_ARGS = ("--workers", "2", "--loop", "uvloop", "--http", "httptools", "--no-access-log")


def site_environment(work_dir: Path, *, debug: bool, static_root: Path) -> dict[str, str | None]:
    """The variables of a site process in this test run's mode (None: unset)."""
    env: dict[str, str | None] = {
        "DEBUG": "1" if debug else "0",
        "SECRET_KEY": "test-secret",
        "SECURE_SSL_REDIRECT": "0",
        "STATIC_ROOT": str(static_root),
        "CELERY_BROKER_URL": None,
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "LOG_FORMAT": "plain",
    }
    if ON_POSTGRES:
        env |= {"DATABASE_URL": shared_database_url(), "REDIS_URL": settings.REDIS_URL or None}
    else:
        sqlite = work_dir / "site.sqlite3"
        env |= {"DATABASE_URL": None, "REDIS_URL": None, "SQLITE_PATH": str(sqlite)}
    return env


def manage(*args: str, env: dict[str, str | None], log: Path, timeout: float = 180) -> None:
    """`python manage.py ARGS` (or `python -m MODULE` when args start with -m) in `env`."""
    environment = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    command = [sys.executable, *args] if args[0] == "-m" else [sys.executable, "manage.py", *args]
    result = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout
    )
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="session")
def collected_static(tmp_path_factory) -> Path:
    """STATIC_ROOT as production's documented `collectstatic` fills it (DEBUG=0: hashed names,
    gzip and brotli variants, the manifest), once per test session."""
    work = tmp_path_factory.mktemp("collectstatic")
    root = work / "staticfiles"
    env = site_environment(work, debug=False, static_root=root)
    env |= {"DATABASE_URL": None, "REDIS_URL": None}  # collectstatic needs neither
    manage("collectstatic", "--noinput", "-v0", env=env, log=work / "collectstatic.log")
    assert (root / "staticfiles.json").exists()
    return root


@pytest.fixture
def site(request, tmp_path, transactional_db) -> Iterator[Callable[..., GatewayProcess]]:
    """`site(debug=..., seed=..., workers=2)`: a migrated site server, after `seed` (a
    `python -m` module run in the server's environment) if given; stopped at the end of the
    test. With DEBUG=1 STATIC_ROOT is an empty directory: `make run` needs no `collectstatic`.
    One worker when a test needs one process's state (the embedded Redis is per process)."""
    started: list[GatewayProcess] = []

    def start(
        *, debug: bool, seed: str | None = None, workers: int = 2, **extra: str
    ) -> GatewayProcess:
        if debug:
            static_root = tmp_path / "no-collectstatic"
        else:
            static_root = request.getfixturevalue("collected_static")
        env = site_environment(tmp_path, debug=debug, static_root=static_root) | extra
        if not ON_POSTGRES:
            manage("migrate", "--noinput", "-v0", env=env, log=tmp_path / "migrate.log")
        if seed:
            manage("-m", seed, env=env, log=tmp_path / "seed.log")
        redis_url = env.pop("REDIS_URL")
        args = ("--workers", str(workers), *UVICORN_ARGS[2:])
        server = GatewayProcess(redis_url=redis_url, log_dir=tmp_path, args=args, **env)
        started.append(server)
        return server.wait_ready(timeout=60)

    yield start
    for server in started:
        server.stop()
