"""Issue 16, critical: one record the database refuses must never stop the ledger.

The attack as it was made: a request whose ledger record holds a NUL byte (a model name
`x\\u0000y`, or prompt content of a team that stores it), or an upstream that reports
`prompt_tokens: 10**15` (out of range for the column), lands in the queue in front of other
teams' records. Before: PostgreSQL refused the whole batch, the drain retried it every 0.5 s
forever, and no later record of any team landed. Now: the batch is written record by record,
the refused ones go to the dead-letter store, and the good ones land.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from django.core.management import call_command

from gateway import ledger, runtime
from gateway.models import DeadLetter, Team, UsageRecord
from tests.factories import make_team
from tests.processes import requires_postgres

pytestmark = pytest.mark.django_db(transaction=True)


def entry(team_id: int, **over) -> dict:
    return {
        "request_id": "req_" + uuid.uuid4().hex,
        "created_at": datetime.now(UTC).isoformat(),
        "team_id": team_id,
        "feature_id": None,
        "api_key_id": None,
        "requested_model": "gpt-4o",
        "served_model": "gpt-4o",
        "provider": "openai",
        "attempts": 1,
        "attempt_log": [],
        "stream": False,
        "input_tokens": 10,
        "output_tokens": 5,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": "0.0001",
        "saved_usd": "0",
        "estimated": False,
        "unpriced": False,
        "latency_ms": 12,
        "status": "ok",
        "http_status": 200,
        "error_type": "",
        "cache": "miss",
        **over,
    }


def push(*records: dict) -> None:
    runtime.sync_redis().rpush(ledger.queue_key(0), *(ledger.encode(r) for r in records))


@requires_postgres
def test_poisoned_records_are_set_aside_and_every_other_teams_records_land(caplog):
    attacker, alpha, beta = make_team("attacker"), make_team("alpha"), make_team("beta")
    nul_model = entry(attacker.id, requested_model="x\u0000y", http_status=404, status="error")
    nul_content = entry(
        attacker.id, content={"messages": [{"role": "user", "content": "a\u0000b"}]}
    )
    huge = entry(attacker.id, input_tokens=10**15)
    good = [entry(alpha.id), entry(beta.id), entry(alpha.id), entry(beta.id)]
    push(nul_model, good[0], nul_content, good[1], huge, good[2], good[3])

    with caplog.at_level(logging.WARNING, logger="gateway.ledger"):
        assert ledger.drain() == 4  # one drain, not an endless retry

    landed = set(UsageRecord.objects.values_list("request_id", flat=True))
    assert landed == {r["request_id"] for r in good}
    assert ledger.pending() == 0
    dead = {d.request_id: d for d in DeadLetter.objects.all()}
    assert set(dead) == {nul_model["request_id"], nul_content["request_id"], huge["request_id"]}
    assert all(d.team_id == attacker.id and d.error for d in dead.values())
    assert "\\u0000" in dead[nul_model["request_id"]].raw  # the raw record, kept as queued
    # One WARNING per refused record, naming its request id.
    warned = {r.request_id for r in caplog.records if "set aside" in r.getMessage()}
    assert warned >= set(dead)

    # The queue keeps flowing for everyone afterwards.
    later = entry(beta.id)
    push(later)
    assert ledger.drain() == 1
    assert UsageRecord.objects.filter(request_id=later["request_id"]).exists()


@requires_postgres
def test_a_refused_record_seen_again_is_one_dead_letter_with_its_attempts():
    team = make_team()
    poison = entry(team.id, requested_model="x\u0000y")
    push(poison)
    ledger.drain()
    push(poison)  # re-queued (say, by hand)
    ledger.drain()
    (dead,) = DeadLetter.objects.all()
    assert dead.attempts == 2


def test_a_deleted_teams_record_is_replayed_after_the_fix():
    team = make_team()
    orphan = entry(987654)  # its team was deleted meanwhile
    push(orphan, entry(team.id))
    assert ledger.drain() == 1
    (dead,) = DeadLetter.objects.all()
    assert "IntegrityError" in dead.error or "FOREIGN KEY" in dead.error.upper()
    assert runtime.sync_redis().get(ledger.DEAD_COUNT_KEY) == b"1"

    call_command("deadletters", "--replay", str(dead.pk))  # not fixed yet: stays
    assert DeadLetter.objects.get().attempts == 2

    Team.objects.create(id=987654, name="restored")  # the fix
    call_command("deadletters", "--replay", str(dead.pk))
    assert not DeadLetter.objects.exists()
    assert UsageRecord.objects.filter(request_id=orphan["request_id"]).exists()
    assert runtime.sync_redis().get(ledger.DEAD_COUNT_KEY) == b"0"


def test_records_set_aside_in_redis_before_the_store_existed_are_adopted():
    team = make_team()
    runtime.sync_redis().rpush(ledger.DEAD_KEY, ledger.encode(entry(123456)))
    push(entry(team.id))
    ledger.drain()
    assert runtime.sync_redis().llen(ledger.DEAD_KEY) == 0
    assert DeadLetter.objects.count() == 1


def test_a_database_that_is_down_sets_nothing_aside(monkeypatch):
    from django.db import OperationalError

    team = make_team()
    push(entry(team.id), entry(team.id))

    def down(raws):
        raise OperationalError("connection refused")

    monkeypatch.setattr(ledger, "_write", down)
    for _ in range(ledger.MAX_TRIES + 2):
        with pytest.raises(ledger.DatabaseDown):
            ledger.drain()
    assert ledger.pending() == 2
    assert not DeadLetter.objects.exists()
    monkeypatch.undo()
    assert ledger.drain() == 2


def test_operators_see_dead_letters_in_metrics_and_the_admin(gateway_server, settings, client):
    from django.contrib.auth.models import User

    settings.DEBUG = True
    settings.METRICS_TOKEN = ""
    team = make_team()
    push(entry(424242), entry(team.id))
    ledger.drain()
    dead = DeadLetter.objects.get()

    scrape = httpx.get(f"http://127.0.0.1:{gateway_server.port}/metrics", timeout=10)
    assert scrape.status_code == 200
    assert "gateway_ledger_dead_letters 1.0" in scrape.text
    assert "gateway_ledger_dead_letters_set_aside_total 1.0" in scrape.text

    User.objects.create_superuser("ops", "ops@example.com", "a-long-passphrase-42")
    page = client.post(
        "/admin/login/?next=/admin/gateway/deadletter/",
        {"username": "ops", "password": "a-long-passphrase-42"},
        follow=True,
    )
    assert dead.request_id in page.content.decode()
    detail = client.get(f"/admin/gateway/deadletter/{dead.pk}/change/").content.decode()
    assert "IntegrityError" in detail and dead.request_id in detail  # the error and the raw
    assert 'name="raw"' not in detail  # read-only
    Team.objects.create(id=424242, name="restored")
    page = client.post(
        "/admin/gateway/deadletter/",
        {"action": "replay", "_selected_action": [dead.pk]},
        follow=True,
    )
    assert "1 record(s) replayed into the ledger." in page.content.decode()
    assert not DeadLetter.objects.exists()
    assert UsageRecord.objects.filter(team_id=424242).count() == 1


def test_a_drainer_whose_lock_expired_does_not_delete_its_successors_lock(settings):
    """Medium 5: the lock was `SET NX PX 60s` then an unconditional DEL, so a drain slower
    than 60 s deleted the next drainer's lock and two drained at once."""
    redis = runtime.sync_redis()
    team = make_team()
    push(entry(team.id))
    successor = {}

    real_write = ledger._write

    def slow_write(raws):
        # Meanwhile this drainer's lock expires and another drainer takes it.
        redis.delete(ledger.lock_key(0))
        successor["took"] = redis.set(ledger.lock_key(0), b"successor", nx=True, px=60_000)
        return real_write(raws)

    ledger._write = slow_write
    try:
        assert ledger.drain() == 1
    finally:
        ledger._write = real_write
    assert successor["took"]
    assert redis.get(ledger.lock_key(0)) == b"successor"
    push(entry(team.id))
    assert ledger.drain() == 0  # the successor still holds it: nobody else drains


def test_an_error_that_is_not_a_refusal_is_retried_a_bounded_number_of_times(monkeypatch):
    team = make_team()
    stuck, fine = entry(team.id), entry(team.id)
    push(stuck, fine)
    real_write = ledger._write

    def write(raws):  # the database answers, but this record fails with an unknown error
        if any(stuck["request_id"].encode() in r for r in raws):
            raise RuntimeError("something unforeseen")
        return real_write(raws)

    monkeypatch.setattr(ledger, "_write", write)
    for _ in range(ledger.MAX_TRIES - 1):
        with pytest.raises(RuntimeError):
            ledger.drain()
    assert ledger.drain() == 1  # the last try: set aside, and the queue moves on
    assert ledger.pending() == 0
    assert UsageRecord.objects.filter(request_id=fine["request_id"]).exists()
    assert DeadLetter.objects.get().request_id == stuck["request_id"]


async def test_a_drainer_backs_off_while_the_database_is_down(settings, monkeypatch):
    import asyncio

    settings.GATEWAY = {**settings.GATEWAY, "LEDGER_FLUSH_INTERVAL_S": 0.01}
    tries: list[float] = []

    async def down(lane, fn, *args):
        tries.append(asyncio.get_running_loop().time())
        raise ledger.DatabaseDown("connection refused")

    monkeypatch.setattr(runtime, "run_db", down)
    stop = asyncio.Event()
    flusher = asyncio.create_task(ledger.run_flusher(stop))
    await asyncio.sleep(0.7)
    stop.set()
    await flusher
    # 0.01 s apart without backoff (about 70 tries); doubling: 0.02, 0.04, ... 0.64 s.
    assert 3 <= len(tries) <= 8
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert gaps[-2] > 4 * gaps[0]
