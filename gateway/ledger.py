"""The usage ledger, written off the hot path.

A request appends its record to a Redis list (one round trip, in the background); a drainer
moves batches into the database. There are `LEDGER_SHARDS` lists, each with its own drain
lock: a team's records go to list team id % LEDGER_SHARDS, so several drainers (the web
processes', the Celery workers') each take a list and write at once, and on a Redis Cluster
the lists live on different nodes. Drainers look in every list up to MAX_SHARDS, so the
setting may change at any deploy without stranding a record.

If Redis is unreachable the record waits in this process's spool and is written straight to
the database by the next drain. A drain inserts a batch and runs the hooks other apps
registered (the dashboard roll-ups, see `Hooks`) in one transaction, skipping records
already there, so a drainer that dies between the insert and the trim never double counts.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any, cast

import orjson
from django.conf import settings
from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    models,
    transaction,
)
from django.utils import timezone
from redis.exceptions import RedisError

from gateway import circuit, redisurl, runtime
from gateway.process import Spool, state
from gateway.redisurl import shared_key
from gateway.roundtrip import RoundTrip

log = logging.getLogger(__name__)

MAX_SHARDS = 64  # settings.py refuses more; drainers look in each, whatever the setting is now
DEAD_KEY = shared_key("ledger:dead")  # before 0002: refused records; drained into DeadLetter now
BATCH = 500
MAX_BACKOFF_S = 30.0
SWEEP_EVERY_S = 30.0  # lost requests (gateway/inflight.py), in processes that drain


@dataclass(frozen=True)
class Hooks:
    """What other apps do with each drained batch, registered at their `ready()`.

    The ledger knows no dashboard: reports.apps.ReportsConfig.ready() connects its roll-ups
    here (docs/architecture.md). Called by the drain only, never on a request's path:
    `on_records` inside the batch's insert transaction (so a roll-up is never counted
    twice nor lost), `on_circuit_events` with the breaker openings moved out of Redis.
    """

    on_records: list[Callable[[list[Any]], None]] = field(default_factory=list)
    on_circuit_events: list[Callable[[list[dict]], None]] = field(default_factory=list)


HOOKS = Hooks()


def on_records(hook: Callable[[list[Any]], None]) -> None:
    """Call `hook(fresh_records)` in each drain's insert transaction (once per function)."""
    if hook not in HOOKS.on_records:
        HOOKS.on_records.append(hook)


def on_circuit_events(hook: Callable[[list[dict]], None]) -> None:
    """Call `hook(events)` with each batch of circuit openings the drain moves (once)."""
    if hook not in HOOKS.on_circuit_events:
        HOOKS.on_circuit_events.append(hook)


def spool() -> Spool:
    """Records that could not reach Redis, waiting in this process (gateway/process.py)."""
    return state().spool


def encode(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, default=str)


@functools.cache
def queue_key(shard: int) -> str:
    return _sharded("ledger", shard)


@functools.cache
def lock_key(shard: int) -> str:
    return _sharded("ledger:lock", shard)


def _sharded(name: str, shard: int) -> str:
    """Shard 0 keeps the name of the one list there was before shards (a record queued by an
    older release is drained like any other), in the slot of the shared keys. On a cluster
    each other shard gets a hash tag of its own, spread over the slots (`_slot_tag`);
    elsewhere a suffix."""
    if shard == 0:
        return shared_key(name)
    if redisurl.CLUSTER:
        return "{" + _slot_tag(shard) + "}:" + name
    return f"gw:{name}:{shard}"


@functools.cache
def _slot_tag(shard: int) -> str:
    """A hash tag whose slot lies `shard` x the golden ratio around the 16,384 slots from
    shard 0's: any number of shards lands spread over the slot range, so over the primaries
    of a balanced cluster, and a shard's slot never depends on how many shards there are."""
    from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

    step = int((shard * 0.6180339887498949) % 1 * REDIS_CLUSTER_HASH_SLOTS)
    target = (key_slot(b"{gw}") + step) % REDIS_CLUSTER_HASH_SLOTS
    for n in range(1_000_000):
        tag = f"gwl{shard}.{n}"
        if (key_slot(tag.encode()) - target) % REDIS_CLUSTER_HASH_SLOTS < 128:
            return tag
    raise AssertionError("unreachable: one tag in 128 lands in the window")


def shard_of(record: dict[str, Any]) -> int:
    team = record.get("team_id")
    return team % int(settings.GATEWAY["LEDGER_SHARDS"]) if type(team) is int else 0


def queue_push(trip: RoundTrip, record: dict[str, Any]) -> None:
    """Add the record's push to a round trip (gateway/roundtrip.py): a request's record
    travels with its settle. If the push does not happen, the record waits in the spool."""
    raw = encode(record)
    index = trip.add("RPUSH", queue_key(shard_of(record)), raw)
    trip.if_not_done(index, partial(spool().items.append, raw))


async def enqueue(record: dict[str, Any], *, done: str = "") -> None:
    """Queue a record; returns once it is in Redis (or, Redis being away, in the spool).

    Records enqueued in the same turn of the event loop share one pipeline (the round
    trips' own sharing), and each request still waits until its record is safe. A request
    cancelled meanwhile does not lose its record: the spooling is the round trip's, not
    the request's.
    """
    trip = RoundTrip(runtime.aredis())
    if done:  # the request `done` is no longer in flight (gateway/inflight.py)
        from gateway import inflight

        inflight.queue_done(trip, done)
    queue_push(trip, record)
    try:
        await trip.send()
    except (RedisError, OSError):
        pass  # spooled by the round trip


def _to_model(data: dict[str, Any]):
    from gateway.models import UsageRecord

    data = dict(data)
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    for name in ("cost_usd", "saved_usd", "reserved_usd"):
        data[name] = Decimal(data.get(name) or "0")
    return UsageRecord(**data)


_TICK = timedelta(microseconds=1)  # between() excludes its end


def _write(raws: list[bytes]) -> int:
    """Insert the records not yet in the ledger and roll them up, in one transaction."""
    from gateway.models import UsageRecord

    records = [_to_model(orjson.loads(r)) for r in raws]
    if not records:
        return 0
    with transaction.atomic():
        # A record written before has the same created_at (the request's start, whoever sent
        # it): the range keeps a partitioned ledger's lookup to the batch's days.
        known = set(
            UsageRecord.objects.between(
                min(r.created_at for r in records), max(r.created_at for r in records) + _TICK
            )
            .filter(request_id__in=[r.request_id for r in records])
            .values_list("request_id", flat=True)
        )
        fresh = []
        for r in records:  # skip what is already in, and repeats within the batch
            if r.request_id not in known:
                known.add(r.request_id)
                fresh.append(r)
        _insert(fresh)
        for hook in HOOKS.on_records:
            hook(fresh)
        _touch_keys(fresh)
    return len(fresh)


def _insert(records) -> None:
    """bulk_create, or on PostgreSQL one COPY: a quarter of the CPU per record (measured
    0.047 against 0.011 ms for batches of 500), and the drain shares its process's CPU."""
    from gateway.models import UsageRecord

    if connection.vendor != "postgresql" or not records:
        UsageRecord.objects.bulk_create(records)
        return
    from psycopg.types.json import Jsonb

    fields = [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in fields)
    sql = f"COPY {connection.ops.quote_name(UsageRecord._meta.db_table)} ({columns}) FROM STDIN"

    def cell(field, value):
        return Jsonb(value) if isinstance(field, models.JSONField) and value is not None else value

    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(sql) as copy:
            for r in records:
                copy.write_row([cell(f, getattr(r, f.attname)) for f in fields])


def _touch_keys(records) -> None:
    """Keys' last-used time, from the ledger rather than a write per request."""
    from gateway.models import ApiKey

    last: dict[int, datetime] = {}
    for r in records:
        if r.api_key_id and (r.api_key_id not in last or r.created_at > last[r.api_key_id]):
            last[r.api_key_id] = r.created_at
    for key_id, used in last.items():
        ApiKey.objects.filter(id=key_id).exclude(last_used_at__gte=used).update(last_used_at=used)


# What the database says about a record rather than about itself: set aside at once.
# (psycopg refuses a NUL byte in text with DataError, Django's backends with ValueError;
# a number out of a column's range is a DataError; a deleted team an IntegrityError. A
# record that is not even a record fails in _to_model with the others.)
REFUSALS = (IntegrityError, DataError, ValueError, TypeError, KeyError, InvalidOperation)
# A database that is down (OperationalError, InterfaceError: connection lost, locked,
# out of resources) refuses nothing: the queue waits. Other errors while the database
# answers (a missing migration, a bug) are retried this many drains, then set aside too.
MAX_TRIES = 3
TRIES_KEY = shared_key("ledger:tries")  # hash: a record's digest -> failed drains so far
DEAD_COUNT_KEY = shared_key("ledger:dead:count")  # dead letters not yet replayed (for /metrics)
DEAD_TOTAL_KEY = shared_key("ledger:dead:total")  # records ever set aside (for /metrics)


class DatabaseDown(Exception):
    """The database does not answer: the queue waits (nothing is set aside or lost)."""


def _database_down() -> bool:
    try:
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return False
    except DatabaseError:
        return True


def _write_or_set_aside(raws: list[bytes]) -> int:
    """Write a batch (the fast path: one COPY). If the database refuses it, write record by
    record and move each refused one to the dead-letter store (`DeadLetter`), so that one
    bad record never blocks the queue. A database that is down raises (DatabaseDown or its
    own error): the records stay queued and the drain is tried again later."""
    try:
        return _write(raws)
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseDown(str(exc)) from exc
    except Exception as exc:
        if not isinstance(exc, REFUSALS) and _database_down():
            raise DatabaseDown(str(exc)) from exc
    written = 0
    for raw in raws:
        try:
            written += _write([raw])
        except (OperationalError, InterfaceError) as exc:
            raise DatabaseDown(str(exc)) from exc
        except Exception as exc:
            if not isinstance(exc, REFUSALS):
                if _database_down():
                    raise DatabaseDown(str(exc)) from exc
                if _count_try(raw) < MAX_TRIES:
                    raise  # retried by the next drain, at most MAX_TRIES times
            set_aside(raw, exc)
    return written


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _count_try(raw: bytes) -> int:
    redis = runtime.sync_redis()
    tries = int(redis.hincrby(TRIES_KEY, _digest(raw), 1))
    redis.expire(TRIES_KEY, 86400)
    return tries


def _clean_text(text: str) -> str:
    return text.replace("\x00", "\\u0000")


def set_aside(raw: bytes, error: BaseException | str) -> Any:
    """Store a refused record as a DeadLetter (once per distinct record: seen again, its
    attempts grow), log it, and count it for /metrics."""
    from gateway.models import DeadLetter

    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    reason = _clean_text(reason)[:4000]
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    data = data if isinstance(data, dict) else {}
    request_id = _clean_text(str(data.get("request_id") or ""))[:64]
    team_id = data.get("team_id") if type(data.get("team_id")) is int else None
    if team_id is not None and not -(2**63) <= team_id < 2**63:
        team_id = None
    with transaction.atomic():
        dead, created = DeadLetter.objects.select_for_update().get_or_create(
            digest=_digest(raw),
            defaults={
                "request_id": request_id,
                "team_id": team_id,
                "raw": _clean_text(raw.decode("utf-8", "backslashreplace")),
                "error": reason,
            },
        )
        if not created:
            DeadLetter.objects.filter(pk=dead.pk).update(
                attempts=models.F("attempts") + 1, error=reason, last_seen=timezone.now()
            )
    log.warning(
        "ledger record %s refused by the database, set aside as dead letter %s: %s",
        request_id or "(no request id)",
        dead.pk,
        reason[:300],
        extra={"request_id": request_id, "dead_letter": dead.pk},
    )
    try:
        redis = runtime.sync_redis()
        redis.hdel(TRIES_KEY, _digest(raw))
        if created:
            redis.incr(DEAD_TOTAL_KEY)
        _publish_dead_count(redis)
    except (RedisError, OSError):
        pass
    return dead


def _publish_dead_count(redis=None) -> None:
    from gateway.models import DeadLetter

    (redis or runtime.sync_redis()).set(DEAD_COUNT_KEY, DeadLetter.objects.count())


def replay(dead) -> bool:
    """Write a dead letter into the ledger again (after a fix). On success it is deleted and
    True returned; refused again, its error and attempts are updated."""
    from gateway.models import DeadLetter

    raw = dead.raw.encode()
    try:
        _write([raw])
    except Exception as exc:
        if _database_down():
            raise DatabaseDown(str(exc)) from exc
        DeadLetter.objects.filter(pk=dead.pk).update(
            attempts=models.F("attempts") + 1,
            error=_clean_text(f"{type(exc).__name__}: {exc}")[:4000],
            last_seen=timezone.now(),
        )
        log.warning("dead letter %s refused again on replay: %s", dead.pk, exc)
        return False
    dead.delete()
    log.info("dead letter %s (%s) replayed into the ledger", dead.pk, dead.request_id)
    try:
        _publish_dead_count()
    except (RedisError, OSError):
        pass
    return True


def _adopt_legacy_dead(redis) -> None:
    """Records set aside in the Redis list DEAD_KEY before the dead-letter store existed."""
    raws = redis.lrange(DEAD_KEY, 0, BATCH - 1)
    for raw in raws:
        set_aside(raw, "refused by the database (set aside in Redis gw:ledger:dead earlier)")
    if raws:
        redis.ltrim(DEAD_KEY, len(raws), -1)


def _drain_events(redis) -> None:
    raws = redis.lrange(circuit.EVENTS_KEY, 0, BATCH - 1)
    if not raws:
        return
    events = [circuit.parse_event(raw) for raw in raws]
    for hook in HOOKS.on_circuit_events:
        hook(events)
    redis.ltrim(circuit.EVENTS_KEY, len(raws), -1)


# The drain lock is released or extended only by its owner (a random token compared in
# the script): a drainer slower than the lock's lifetime never deletes its successor's lock.
LOCK_MS = 60_000
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_EXTEND_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def acquire_lock(redis, shard: int = 0) -> str | None:
    token = secrets.token_hex(16)
    return token if redis.set(lock_key(shard), token, nx=True, px=LOCK_MS) else None


def release_lock(redis, token: str, shard: int = 0) -> bool:
    return bool(redis.eval(_RELEASE_LOCK, 1, lock_key(shard), token))


def extend_lock(redis, token: str, shard: int = 0) -> bool:
    return bool(redis.eval(_EXTEND_LOCK, 1, lock_key(shard), token, LOCK_MS))


def drain(max_batches: int = 100) -> int:
    """Move queued records into the database. Returns how many were inserted.

    Visits shard 0 (which also holds the circuit events and the legacy dead letters) and
    every other shard with records, from a random one on: a shard another drainer holds is
    skipped, so concurrent drainers spread over the shards instead of queueing for one."""
    written = 0
    pending = spool().items
    if pending:
        batch, pending[:] = list(pending), []
        try:
            written += _write_or_set_aside(batch)
        except Exception:
            pending[:0] = batch
            raise
    redis = runtime.sync_redis()
    shards = [shard for shard, n in enumerate(queue_lengths(redis)) if n or shard == 0]
    turn = random.randrange(len(shards))
    for shard in shards[turn:] + shards[:turn]:
        written += _drain_shard(redis, shard, max_batches)
    return written


# Locks this process took and could not release (their node failed mid-drain), by shard:
# the next drain here takes them back by their token instead of waiting LOCK_MS for them.
_unreleased: dict[int, str] = {}


def _take_lock(redis, shard: int) -> str | None:
    token = _unreleased.pop(shard, None)
    if token is not None and extend_lock(redis, token, shard):
        return token
    return acquire_lock(redis, shard)


def _drain_shard(redis, shard: int, max_batches: int) -> int:
    token = _take_lock(redis, shard)
    if token is None:
        return 0  # another drainer is at work on it
    written = 0
    queue = queue_key(shard)
    try:
        for _ in range(max_batches):
            raws = redis.lrange(queue, 0, BATCH - 1)
            if not raws:
                break
            written += _write_or_set_aside(cast(list[bytes], raws))
            redis.ltrim(queue, len(raws), -1)
            if not extend_lock(redis, token, shard):
                log.warning("ledger drain lock %s expired mid-drain; leaving the rest", shard)
                return written
        if shard == 0:
            _drain_events(redis)
            _adopt_legacy_dead(redis)
    finally:
        try:
            release_lock(redis, token, shard)
        except RedisError:
            _unreleased[shard] = token
            raise
    return written


def queue_lengths(redis) -> list[int]:
    """Records waiting in each shard's list, in one pipeline (on a cluster, one per node)."""
    pipe = redis.pipeline(transaction=False)
    for shard in range(MAX_SHARDS):
        pipe.llen(queue_key(shard))
    return [int(n) for n in pipe.execute()]


def queued(redis=None) -> int:
    """Records waiting in Redis, over every shard."""
    return sum(queue_lengths(redis or runtime.sync_redis()))


def pending() -> int:
    return queued() + len(spool().items)


def _sweep_lost() -> None:
    from gateway import inflight

    inflight.sweep()


async def run_flusher(stop: asyncio.Event) -> None:
    """Drain periodically inside a web process until `stop` is set, then drain once more.
    While the database is down the interval doubles (up to MAX_BACKOFF_S): the records
    wait in Redis, nothing is set aside or lost."""
    interval = settings.GATEWAY["LEDGER_FLUSH_INTERVAL_S"]
    delay = interval
    next_sweep = time.monotonic() + SWEEP_EVERY_S
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            pass
        try:
            await runtime.run_db("ledger", drain)
            delay = interval
            if time.monotonic() >= next_sweep:  # the beat task does it too; either is safe
                next_sweep = time.monotonic() + SWEEP_EVERY_S
                await runtime.run_db("ledger", _sweep_lost)
        except DatabaseDown as exc:
            delay = min(max(delay, interval) * 2, MAX_BACKOFF_S)
            log.warning(
                "ledger database unreachable (%s); records stay queued, next try in %.1f s",
                exc,
                delay,
            )
        except RedisError as exc:  # a node restarting or failing over: no traceback
            delay = min(max(delay, interval) * 2, MAX_BACKOFF_S)
            log.warning(
                "ledger queues unreachable (%s: %s); records stay queued, next try in %.1f s",
                type(exc).__name__,
                exc,
                delay,
            )
        except Exception:
            delay = min(max(delay, interval) * 2, MAX_BACKOFF_S)
            log.exception("ledger drain failed; records stay queued")
