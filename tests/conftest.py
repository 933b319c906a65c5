"""Shared fixtures. Every test starts with an empty Redis (real or the in-process stand-in)
and a cold config snapshot."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from gateway import runtime
from gateway.process import reset_state


def pytest_report_header(config):
    redis = settings.REDIS_URL or "in-process fakeredis"
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    return f"gateway test mode: database={db} redis={redis}"


# Fixtures that serve the app over real HTTP: a test using one (directly or through another
# fixture) is end to end, and `make test-stock` runs those again with GATEWAY_FAST_PATH=0.
SERVED_BY = frozenset({"gateway_server", "site"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SERVED_BY.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def _flush_by_delete():
    """A transactional test ends by flushing every table. On PostgreSQL Django does it with
    one TRUNCATE, which gives each of this schema's 41 tables new files and syncs them:
    ~100 ms a test, 40 % of the suite's time against PostgreSQL. DELETE of the few rows a
    test wrote takes ~11 ms. The foreign keys are Django's, DEFERRABLE INITIALLY DEFERRED,
    and the flush runs in one transaction, so the order of the tables does not matter.
    Sequences are left alone as TRUNCATE left them (`reset_sequences` keeps TRUNCATE)."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    truncate = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if reset_sequences:
            return truncate(
                self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        return [f"DELETE FROM {self.quote_name(table)};" for table in tables]

    DatabaseOperations.sql_flush = sql_flush
    yield
    DatabaseOperations.sql_flush = truncate


@pytest.fixture(scope="session", autouse=True)
def _close_db_lanes(django_db_setup, django_db_blocker):
    """Close the gateway's own database threads before the test database is dropped."""
    yield
    with django_db_blocker.unblock():
        runtime.close_db_threads()


@pytest.fixture(scope="session", autouse=True)
def _static_files_from_the_source_tree():
    """This process names and serves static files as DEBUG does, from the source tree, in
    every mode: DEBUG=0's manifest storage needs a `collectstatic` run first. The static files
    as served are proven against uvicorn itself (tests/site_server.py)."""
    with override_settings(
        STORAGES={
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
        WHITENOISE_AUTOREFRESH=True,
        WHITENOISE_USE_FINDERS=True,
    ):
        yield


@pytest.fixture(autouse=True)
def _clean_state(settings, tmp_path):
    # pruneledger's archives go to the test's own folder, never the checkout's var/.
    settings.GATEWAY_LEDGER_ARCHIVE_DIR = str(tmp_path / "ledger-archive")
    settings.GATEWAY = {**settings.GATEWAY, "LEDGER_IN_PROCESS": False}
    runtime.sync_redis().flushdb()
    # A fresh process state (gateway/process.py): no loop clients, cold config snapshot,
    # empty spool, no remembered windows, metric children or throttled clients.
    reset_state()
    yield
    # A background config refresh the test started must not run into the database flush
    # that ends the test (SQLite: "database table is locked").
    runtime.wait_db_lanes()
    reset_state()


@pytest.fixture
def redis_sync():
    return runtime.sync_redis()


# Loopback OpenAI/Anthropic servers (`openai_server`, `anthropic_server`), the gateway in a
# thread, and gateway and site subprocesses (`gateways`, `site`).
pytest_plugins = ["tests.loopback", "tests.gateway_server", "tests.processes", "tests.site_server"]
