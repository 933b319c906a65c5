"""The config version (gateway/configversion.py): a refresh reads again only what the
published changes name, everything when they cannot be known, and unknown keys in one query.
Embedded mode: the in-process Redis stand-in holds the version; no subscriber is needed."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gateway import configversion, runtime
from gateway import snapshot as snapshots
from gateway.models import ApiKey
from gateway.snapshot import store
from tests.factories import make_feature, make_key, make_team

pytestmark = pytest.mark.django_db(transaction=True)


def snapshot():
    return async_to_sync(store().snapshot)()


def settled():
    """The snapshot once every refresh already started (and any it chains) has landed."""
    snapshot()
    runtime.wait_db_lanes()
    runtime.wait_db_lanes()
    return snapshot()


def count_loads(monkeypatch) -> dict[str, list]:
    calls: dict[str, list] = {"full": [], "partial": []}
    full, partial = snapshots.load_snapshot, snapshots.refresh_snapshot

    def counted_full(*args):
        calls["full"].append(args)
        return full(*args)

    def counted_partial(*args):
        calls["partial"].append(args[1])  # the scopes
        return partial(*args)

    monkeypatch.setattr(snapshots, "load_snapshot", counted_full)
    monkeypatch.setattr(snapshots, "refresh_snapshot", counted_partial)
    return calls


def read_alone(calls: dict[str, list], scope: str) -> None:
    """Read at the save, and again at its publication (the version moved): never all. On a
    slow machine the copy's TTL may also lapse meanwhile: that revalidation names no scope
    (it reads no key nor team), so it is no read of anything else."""
    named = [scopes for scopes in calls["partial"] if scopes]
    assert calls["full"] == [] and named, calls
    assert all(scopes == {scope} for scopes in named), calls["partial"]


def test_every_save_bumps_the_version_once_committed():
    make_team("first")  # starts the epoch (Redis is empty at each test's start)
    before = configversion.read()
    team = make_team("acme")
    key, _ = make_key(team)
    after = configversion.read()
    assert after[1] == before[1] + 2
    assert configversion.changes_between(before, after) == {f"t:{team.pk}", f"k:{key.pk}"}


def test_a_revoked_key_is_read_again_alone(monkeypatch):
    acme = make_team("acme")
    make_team("other")
    key, secret = make_key(acme)
    first = settled()
    calls = count_loads(monkeypatch)
    key.revoked_at = key.created_at
    key.save(update_fields=["revoked_at"])
    second = snapshot()  # waits for the refresh the save announced
    hashed = ApiKey.hash_secret(secret)
    assert second.keys[hashed].revoked and not first.keys[hashed].revoked
    read_alone(calls, f"k:{key.pk}")
    assert second.teams is first.teams  # no team was read again


def test_a_feature_added_reads_its_team_only(monkeypatch):
    acme, other = make_team("acme"), make_team("other")
    first = settled()
    calls = count_loads(monkeypatch)
    make_feature(acme, "chatbot")
    second = snapshot()
    assert "chatbot" in second.teams[acme.pk].features
    assert second.teams[other.pk] is first.teams[other.pk]
    read_alone(calls, f"t:{acme.pk}")


def test_nothing_changed_reads_no_key_or_team(monkeypatch, settings):
    make_key(make_team("acme"))
    first = snapshot()
    settings.GATEWAY = {**settings.GATEWAY, "CONFIG_TTL_S": 0}
    with CaptureQueriesContext(connection) as queries:
        second = store().snapshot_sync()
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert "gateway_apikey" not in sql and "gateway_team" not in sql
    assert second.keys == first.keys and second.teams is first.teams


def test_a_gap_in_the_change_log_or_a_new_epoch_reads_everything(monkeypatch):
    key, _ = make_key(make_team("acme"))
    settled()
    calls = count_loads(monkeypatch)
    runtime.sync_redis().incr(configversion.VERSION_KEY)  # a bump whose log entry is gone
    key.save()
    snapshot()
    runtime.wait_db_lanes()  # the refresh its publication started, too
    after_gap = len(calls["full"])
    assert after_gap >= 1
    runtime.sync_redis().flushdb()  # Redis restarted empty: another epoch
    key.save()
    snapshot()
    assert len(calls["full"]) > after_gap


def test_keys_written_without_signals_are_looked_up_by_hash_in_one_query(settings):
    """bulk_create sends no signal: unknown keys wait for one refresh that looks up every
    waiting hash in one query (no query per key, no reload of every key)."""
    settings.GATEWAY = {**settings.GATEWAY, "AUTH_RELOAD_INTERVAL_S": 0}
    team = make_team("acme")
    snapshot()
    secrets, rows = [], []
    for i in range(30):
        key = ApiKey(team=team, name=f"k{i}")
        secrets.append(key.set_new_secret())
        rows.append(key)
    ApiKey.objects.bulk_create(rows)

    async def all_at_once():
        import asyncio

        from gateway.auth import authenticate

        return await asyncio.gather(*(authenticate(f"Bearer {s}") for s in secrets))

    with CaptureQueriesContext(connection) as queries:
        found = async_to_sync(all_at_once)()
    assert {k.team_id for k, _, _ in found} == {team.pk}
    runtime.wait_db_lanes()
    key_queries = [q for q in queries.captured_queries if "gateway_apikey" in q["sql"]]
    assert len(key_queries) <= 2  # the refresh they share (and one for late arrivals)
