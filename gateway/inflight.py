"""Requests in flight, so that a process that dies mid-answer still leaves a ledger record.

"A record for every request": a request's record is written when it settles. A process
killed mid-answer (SIGKILL, the OOM killer, a lost machine) never settles; before this its
request left no ledger row, its budget hold stayed until it expired, and the tokens already
delivered were never billed.

- At admission the request is registered in Redis (on the admission's own round trip, no
  database work): `gw:inflight` is a sorted set of request ids by the instant (Redis's
  clock) after which the request counts as lost, its request deadline plus a grace; each
  has a hash `gw:inflight:<id>` with the skeleton of its ledger record and its reserved
  worst case.
- A streamed answer reports what it has delivered (characters of content) into a
  per-process dict: no I/O per chunk. A per-process ticker sends every stream's progress
  once a second, all in one round trip.
- Writing the request's record (settle, refusal, cache hit) removes the entry on the same
  round trip, before the spend.
- `sweep()` (Celery beat, `gateway.tasks.sweep_lost_requests`) claims the entries past their
  deadline (atomically, with a lease and a token, so two sweepers never take the same one)
  and turns each into a `lost` ledger record: the estimated delivered cost (prompt estimate
  plus the delivered output), billed once, and the reserved worst case kept beside it. The
  claim check, the ledger push, the spend (which settles the hold, releasing it) and the
  removal are one script: exactly once. A settle arriving after the sweep finds the hold
  already settled (the spend script's settled marker) and its record a repeat of the lost one's
  request id (the drain keeps the first), so nothing is billed twice.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from redis.exceptions import RedisError

from budgets import lua as budget_lua
from gateway import redisurl, runtime
from gateway.process import state
from gateway.redisurl import shared_key
from gateway.roundtrip import RoundTrip

log = logging.getLogger(__name__)

ZSET = shared_key("inflight")
PREFIX = shared_key("inflight:")
PROGRESS_INTERVAL_S = 1.0
CLAIM_LEASE_MS = 60_000

_REGISTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], 'r', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 0
"""

_DONE = """
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('DEL', KEYS[2])
"""

# KEYS[1]: the entry's hash. ARGV: delivered chars, served model, its provider ('' = keep).
_PROGRESS = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'chars', ARGV[1])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'model', ARGV[2], 'provider', ARGV[3])
end
return 1
"""

# KEYS[1]: the set. ARGV: how many, lease ms, token, hash prefix.
# Returns {id, {field, value, ...}, ...} for the entries claimed; forgets orphans (an entry
# whose hash expired).
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, rid in ipairs(ids) do
  local h = ARGV[4] .. rid
  local data = redis.call('HGETALL', h)
  if #data == 0 then
    redis.call('ZREM', KEYS[1], rid)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), rid)
    redis.call('HSET', h, 'claim', ARGV[3])
    table.insert(out, rid)
    table.insert(out, data)
  end
end
return out
"""

# The budget spend script as a function, then: if this sweeper still holds the claim, push
# the lost record, remove the entry and spend (settling the hold). All or nothing.
# KEYS: the set, the hash, the ledger queue, then the spend script's keys.
# ARGV: request id, claim token, the record, then the spend script's arguments.
_FINALIZE = (
    "local function spend(KEYS, ARGV)\n"
    + budget_lua.SPEND
    + """
end
if redis.call('HGET', KEYS[2], 'claim') ~= ARGV[2] then
  return {0}
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[3], ARGV[3])
local skeys, sargs = {}, {}
for i = 4, #KEYS do
  skeys[#skeys + 1] = KEYS[i]
end
for i = 4, #ARGV do
  sargs[#sargs + 1] = ARGV[i]
end
local claimed = {}
if #skeys > 0 then
  claimed = spend(skeys, sargs)
end
return {1, claimed}
"""
)


# On Redis Cluster the spend script's keys live in the team's slot and the team's ledger
# queue in its own, neither with the set's. So the sweep runs the spend script first
# (idempotent: its marker makes a second run add nothing), pushes the lost record to the
# team's queue, then runs this: if this sweeper still holds the claim, remove the entry.
# A sweeper that dies on the way leaves the entry to the next one, whose spend adds nothing
# and whose record the drain skips (same request id). KEYS: the set, the hash. ARGV:
# request id, claim token. Returns 1 when this sweeper's claim held.
_FINISH = """
if redis.call('HGET', KEYS[2], 'claim') ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""


# KEYS: the set, the hash. ARGV: request id, claim token. Drops an entry this sweeper holds.
_FORGET = """
if redis.call('HGET', KEYS[2], 'claim') == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
end
return 0
"""


def key(request_id: str) -> str:
    return PREFIX + request_id


def lost_after_ms() -> int:
    g = settings.GATEWAY
    return int((float(g["REQUEST_DEADLINE_S"]) + float(g.get("LOST_GRACE_S", 30.0))) * 1000)


def queue_register(trip: RoundTrip, call: Any, reserved_units: int) -> None:
    """Register the call as in flight (on the admission's round trip)."""
    first = call.chain[0] if call.chain else None
    skeleton = {
        "request_id": call.request_id,
        "created_at": call.created_at.isoformat(),
        "team_id": call.team.id,
        "feature_id": call.feature.id if call.feature else None,
        "api_key_id": call.key.id if call.key else None,
        "requested_model": call.requested_model[:128],
        "endpoint": call.operation.endpoint if call.operation else "chat.completions",
        "stream": call.stream,
        "prompt_tokens": call.prompt_tokens,
        "reserved_units": reserved_units,
        "model": first.name if first else "",
        "provider": first.provider.name if first else "",
    }
    after = lost_after_ms()
    trip.script(
        _REGISTER,
        [ZSET, key(call.request_id)],
        [call.request_id, orjson.dumps(skeleton), after, after * 2 + 3_600_000],
    )


def queue_done(trip: RoundTrip, request_id: str) -> None:
    """The request's record is being written: it is no longer in flight."""
    state().stream_progress.pop(request_id, None)
    trip.script(_DONE, [ZSET, key(request_id)], [request_id])


def progress(request_id: str, chars: int, model: str = "", provider: str = "") -> None:
    """Note what a stream has delivered so far (characters of content). No I/O: the progress
    waits in the process state (gateway/process.py) for the process's one ticker (see the
    module doc)."""
    process = state()
    process.stream_progress[request_id] = (chars, model, provider)
    ticker = process.progress_ticker
    if ticker is None or ticker.done() or ticker.get_loop() is not asyncio.get_running_loop():
        process.progress_ticker = runtime.spawn(_tick(process.stream_progress))


async def _tick(pending: dict[str, tuple[int, str, str]]) -> None:
    while pending:
        await asyncio.sleep(PROGRESS_INTERVAL_S)
        batch = dict(pending)
        pending.clear()
        trip = RoundTrip(runtime.aredis())
        for rid, (chars, model, provider) in batch.items():
            trip.script(_PROGRESS, [key(rid)], [chars, model, provider])
        try:
            await trip.send()
        except (RedisError, OSError):
            pass  # the next tick sends newer figures anyway


def delta_chars(chunk: dict[str, Any]) -> int:
    """Characters of content (text and tool arguments) in one OpenAI stream chunk."""
    n = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if isinstance(content, str):
            n += len(content)
        for call in delta.get("tool_calls") or ():
            args = (call.get("function") or {}).get("arguments")
            if isinstance(args, str):
                n += len(args)
    return n


def lost_record(fields: dict[str, str], snapshot) -> tuple[dict[str, Any], int]:
    """The ledger record of a lost request, and the units to bill (the estimated delivered
    cost: the prompt estimate and the delivered output, at the model's prices)."""
    from gateway import tokens
    from gateway.money import Cost, cost_of, units_to_usd
    from gateway.providers.base import Usage

    r = orjson.loads(fields["r"])
    model_name = fields.get("model") or r["model"]
    provider = fields.get("provider") or r["provider"]
    chars = int(fields.get("chars") or 0)
    output = (chars + tokens.CHARS_PER_TOKEN - 1) // tokens.CHARS_PER_TOKEN
    usage = Usage(input_tokens=int(r["prompt_tokens"]), output_tokens=output, reported=False)
    model = snapshot.models.get(model_name)
    cost = cost_of(usage, model.prices) if model else Cost(Decimal(0), unpriced=True)
    started = datetime.fromisoformat(r["created_at"])
    latency = max(0, int((datetime.now(started.tzinfo) - started).total_seconds() * 1000))
    served = "model" in fields  # the answer had started: its model reported progress
    record = {
        "request_id": r["request_id"],
        "created_at": r["created_at"],
        "team_id": r["team_id"],
        "feature_id": r["feature_id"],
        "api_key_id": r["api_key_id"],
        "requested_model": r["requested_model"],
        "served_model": model_name if served else "",
        "provider": provider if served else "",
        "attempts": 1 if served else 0,
        "attempt_log": [
            {
                "model": model_name,
                "provider": provider,
                "error": "lost: the serving process ended before the request settled",
            }
        ],
        "endpoint": r.get("endpoint", "chat.completions"),
        "stream": r["stream"],
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": str(cost.usd),
        "saved_usd": "0",
        "reserved_usd": str(units_to_usd(int(r["reserved_units"]))),
        "estimated": True,
        "unpriced": cost.unpriced,
        "latency_ms": min(latency, 2**31 - 1),
        "status": "lost",
        "http_status": 200 if served else 0,
        "error_type": "process_lost",
        "cache": "bypass",
    }
    return record, cost.units


class _ScriptOnly:
    """What budgets.services.queue_spend needs of a round trip, to borrow its arguments."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.args: list[Any] = []

    def script(self, source: str, keys: list[str], args: list[Any]) -> int:
        self.keys, self.args = keys, args
        return 0


def sweep(limit: int = 200) -> int:
    """Turn requests past their deadline into `lost` ledger records (see the module doc).
    Returns how many were written."""
    from budgets import services as budgets
    from budgets.tasks import send_budget_alert
    from gateway import ledger
    from gateway.snapshot import store

    redis = runtime.sync_redis()
    token = secrets.token_hex(16)
    reply = redis.eval(_CLAIM, 1, ZSET, limit, CLAIM_LEASE_MS, token, PREFIX)
    if not reply:
        return 0
    snapshot = store().snapshot_sync()
    written = 0
    for i in range(0, len(reply), 2):
        rid = reply[i].decode()
        flat = reply[i + 1]
        fields = {flat[j].decode(): flat[j + 1].decode() for j in range(0, len(flat), 2)}
        try:
            record, units = lost_record(fields, snapshot)
        except (KeyError, ValueError, TypeError):
            log.exception("in-flight entry %s is unreadable; dropped", rid)
            redis.eval(_FORGET, 2, ZSET, key(rid), rid, token)
            continue
        try:
            team = snapshot.teams.get(record["team_id"])
            feature = None
            if team is not None and record["feature_id"] is not None:
                feature = next(
                    (f for f in team.features.values() if f.id == record["feature_id"]), None
                )
            budget_list = team.budgets_for(feature) if team is not None else []
            slots = budgets.slots_for(budget_list, datetime.fromisoformat(record["created_at"]))
            spend = _ScriptOnly()
            # The sweep's marker lives as long as the hold would have: the request's own
            # settle may still come (a stalled process), and must then add nothing.
            marker_ms = int(float(settings.GATEWAY["RESERVATION_TTL_S"]) * 1000)
            budgets.queue_spend(
                spend, slots=slots, request_id=rid, units=units, marker_ttl_ms=marker_ms
            )
            # The team's queue: the request's own record, should it come after all, lands
            # behind this one in the same list, and the drain keeps the first (gateway/ledger.py).
            queue = ledger.queue_key(ledger.shard_of(record))
            if redisurl.CLUSTER:  # three slots: spend, push, then finish (_FINISH)
                claimed = []
                if spend.keys:
                    claimed = redis.eval(
                        budget_lua.SPEND, len(spend.keys), *spend.keys, *spend.args
                    )
                redis.rpush(queue, ledger.encode(record))
                result = [redis.eval(_FINISH, 2, ZSET, key(rid), rid, token), claimed]
            else:
                result = redis.eval(
                    _FINALIZE,
                    3 + len(spend.keys),
                    ZSET,
                    key(rid),
                    queue,
                    *spend.keys,
                    rid,
                    token,
                    ledger.encode(record),
                    *spend.args,
                )
        except Exception:
            log.exception("could not sweep the lost request %s; tried again later", rid)
            continue
        if int(result[0]):  # else settled meanwhile, or another sweeper's now
            written += 1
            log.warning(
                "request %s was lost mid-answer (its process ended): recorded as lost, billed "
                "%s USD (estimated), its %s USD hold released",
                rid,
                record["cost_usd"],
                record["reserved_usd"],
                extra={"request_id": rid},
            )
        claimed = result[1] if len(result) > 1 else []  # the thresholds the spend claimed
        for j in range(0, len(claimed), 3):
            slot = slots[int(claimed[j]) - 1]
            try:
                send_budget_alert.delay(
                    slot.budget.id,
                    slot.window.name,
                    slot.window.key,
                    int(claimed[j + 1]),
                    int(claimed[j + 2]),
                )
            except Exception:
                log.exception("could not enqueue a budget alert for lost request %s", rid)
                redis.hdel(slot.keys.alerted, str(int(claimed[j + 1])))
    return written
