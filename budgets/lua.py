"""Every Redis script of budgets and rate limits, in one place.

Budget counters are EXACT: `spent` and `reserved` are integer units (1e-10 USD, see
gateway/money.py) changed only inside these scripts with INCRBY/DECRBY, so no two processes
can interleave a read and a write. Comparisons against a limit are done in Lua numbers
(doubles): exact up to 2**53 units (about $900,000 per budget window); beyond that they may be
off by a few units (1e-9 USD), never the stored counters themselves.

Rate-limit buckets are APPROXIMATE by design: token counts are estimates made before the call
and buckets refill continuously in floating point. They guard against runaway loops, not money.

Which clock: the scripts read Redis's clock (TIME) for two things only: a reservation's
hold expires at TIME + its lifetime (GATEWAY RESERVATION_TTL_S; `purge` drops the holds past
it), and a rate bucket refills by the TIME elapsed since it was last taken from. Every key's
expiry is a relative PEXPIRE whose length the caller passes in. For a window's counters
(spent, alerted) that length is `Window.ttl_ms` (budgets/windows.py): the time left until the
window ends, measured on the *process* clock, plus a grace period; Redis then counts it from
its own clock. So no script is handed an absolute instant, but a process clock that is off by
N seconds moves a counter's expiry by N seconds, which the grace period (budgets/keys.py
SPENT_GRACE_S, 3 days) absorbs.
"""

from __future__ import annotations

# Shared helpers, prepended to each budget script.
PRELUDE = """
local function slice(t, from, to)
  local out = {}
  for i = from, to do
    out[#out + 1] = t[i]
  end
  return out
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Before issue 23 a settled reservation stayed in `holds` as this tombstone until it would
-- have expired. Settles now delete the hold and leave a per-request marker key instead; the
-- value is still recognised so that tombstones written before an upgrade purge cleanly.
local SETTLED = 'settled'

-- Drop reservations whose process died before settling or releasing them.
local function purge(reserved, holds, expiries, now)
  local dead = redis.call('ZRANGEBYSCORE', expiries, '-inf', now)
  for _, rid in ipairs(dead) do
    local units = redis.call('HGET', holds, rid)
    if units and units ~= SETTLED then
      redis.call('DECRBY', reserved, units)
    end
    redis.call('HDEL', holds, rid)
  end
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', expiries, '-inf', now)
  end
end

-- Drop a live reservation (release and settle): `holds` and `expiries` only ever hold the
-- requests in flight. Returns the units it held, or false.
local function drop(reserved, holds, expiries, rid)
  local units = redis.call('HGET', holds, rid)
  if units and units ~= SETTLED then
    redis.call('DECRBY', reserved, units)
    redis.call('HDEL', holds, rid)
    redis.call('ZREM', expiries, rid)
    return units
  end
  return false
end
"""

# hold(keys, rid, units, ttl, limits): keys are 4 per budget window (spent, reserved, holds,
# expiries); units and ttl (ms) as strings; limits: one per budget window (-1: not enforced).
# Returns {0} when reserved, or {i, spent, reserved} naming the first window it would pass.
HOLD = """
local function hold(keys, rid, units_arg, ttl_arg, limits)
  local units, ttl = tonumber(units_arg), tonumber(ttl_arg)
  local now = now_ms()
  local n = #keys / 4
  for i = 1, n do
    local b = (i - 1) * 4
    purge(keys[b + 2], keys[b + 3], keys[b + 4], now)
  end
  if n > 0 and redis.call('HEXISTS', keys[3], rid) == 1 then
    return {0}  -- the same request reserving twice (a retry): already held
  end
  for i = 1, n do
    local limit = tonumber(limits[i])
    if limit >= 0 then
      local b = (i - 1) * 4
      local spent = redis.call('GET', keys[b + 1]) or '0'
      local reserved = redis.call('GET', keys[b + 2]) or '0'
      if tonumber(spent) + tonumber(reserved) + units > limit then
        return {i, spent, reserved}
      end
    end
  end
  local expiry = now + ttl
  for i = 1, n do
    local b = (i - 1) * 4
    redis.call('INCRBY', keys[b + 2], units_arg)
    redis.call('HSET', keys[b + 3], rid, units_arg)
    redis.call('ZADD', keys[b + 4], expiry, rid)
    for k = 2, 4 do
      redis.call('PEXPIRE', keys[b + k], 2 * ttl)
    end
  end
  return {0}
end
"""

# KEYS: the request's settled marker (budgets/keys.py `settled_key`), then 5 per budget window
#   (spent, reserved, holds, expiries, alerted).
# ARGV: request id ('' counts without a marker; the gateway always passes one), units, the
#   marker's lifetime (ms), then per budget window: limit (-1: none), spent key lifetime (ms,
#   relative), n thresholds, the n thresholds.
# Idempotent per request id: the first settle drops the holds (so `holds` and `expiries` only
# ever hold requests in flight, issue 23) and sets the marker with SET NX PX; a repeated
# settle (a retried round trip whose reply was lost, or a late settle after the lost-request
# sweep settled it) finds the marker and adds nothing. A request id that holds nothing and has
# no marker (its hold expired, or it never held) is a plain spend, as before.
# Claims each threshold the new spend has reached that nobody claimed before (HSETNX: exactly
# one caller wins it per window).
# Returns a flat list {i, threshold, spent, ...} of the thresholds this call claimed.
SPEND = (
    PRELUDE
    + """
local rid, units = ARGV[1], ARGV[2]
local now = now_ms()
local claimed = {}
local repeated = false
if rid ~= '' then
  repeated = redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) == false
end
local a = 4
for i = 1, (#KEYS - 1) / 5 do
  local b = 1 + (i - 1) * 5
  purge(KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], now)
  if rid ~= '' then
    local held = redis.call('HGET', KEYS[b + 3], rid)
    if held == SETTLED then  -- a tombstone written before the upgrade
      repeated = true
    else
      drop(KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], rid)
    end
  end
  local after = tonumber(redis.call('GET', KEYS[b + 1]) or '0')
  if not repeated then
    after = redis.call('INCRBY', KEYS[b + 1], units)
    redis.call('PEXPIRE', KEYS[b + 1], ARGV[a + 1])
  end
  local limit, n = tonumber(ARGV[a]), tonumber(ARGV[a + 2])
  if limit > 0 and not repeated then
    for j = 1, n do
      local t = tonumber(ARGV[a + 2 + j])
      if after * 100 >= t * limit and redis.call('HSETNX', KEYS[b + 5], t, 1) == 1 then
        table.insert(claimed, i)
        table.insert(claimed, t)
        table.insert(claimed, redis.call('GET', KEYS[b + 1]))
      end
    end
    redis.call('PEXPIRE', KEYS[b + 5], ARGV[a + 1])
  end
  a = a + 3 + n
end
return claimed
"""
)

# KEYS: 4 per budget window; ARGV: request id. Drops the reservation, adds nothing.
RELEASE = (
    PRELUDE
    + """
local now = now_ms()
for i = 1, #KEYS / 4 do
  local b = (i - 1) * 4
  purge(KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], now)
  drop(KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], ARGV[1])
end
return 0
"""
)

# KEYS: 4 per budget window. Returns {spent, reserved, ...} after purging expired reservations.
PEEK = (
    PRELUDE
    + """
local now = now_ms()
local out = {}
for i = 1, #KEYS / 4 do
  local b = (i - 1) * 4
  purge(KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], now)
  table.insert(out, redis.call('GET', KEYS[b + 1]) or '0')
  table.insert(out, redis.call('GET', KEYS[b + 2]) or '0')
end
return out
"""
)

# KEYS[1]: a spent counter; ARGV: units in the ledger, the counter's lifetime (ms, relative).
# Raises the counter to the ledger's total, never lowers it: the ledger is written after the
# counter (it lags by seconds), so a lower ledger means "not drained yet", not "too high".
# Returns the counter as it was.
RAISE_TO_LEDGER = """
local current = redis.call('GET', KEYS[1]) or '0'
if tonumber(ARGV[1]) > tonumber(current) then
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return current
"""

# Token buckets, one per limit (APPROXIMATE, see above). take_tokens(keys, args, ttl): keys
# are the buckets; args per bucket its capacity (per minute) and this request's cost; ttl the
# buckets' TTL ms. A bucket refills at capacity per minute; a request passes when every
# bucket holds min(cost, capacity) (so a request larger than the limit passes on a full
# bucket and leaves it in debt). Nothing is taken unless every bucket passes.
# Returns {0}, or {i, ms} for the bucket i that needs the longest wait (ms) to pass.
TAKE_TOKENS = """
local function take_tokens(keys, args, ttl)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local level, worst, wait = {}, 0, 0
  for i = 1, #keys do
    local cap, cost = tonumber(args[2 * i - 1]), tonumber(args[2 * i])
    local state = redis.call('HMGET', keys[i], 'tokens', 'ts')
    local tokens, ts = tonumber(state[1]) or cap, tonumber(state[2]) or now
    local rate = cap / 60000
    tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
    local need = math.min(cost, cap)
    if tokens < need and (need - tokens) / rate > wait then
      worst, wait = i, (need - tokens) / rate
    end
    level[i] = tokens - cost
  end
  if worst > 0 then
    return {worst, math.ceil(wait)}
  end
  for i = 1, #keys do
    redis.call('HSET', keys[i], 'tokens', level[i], 'ts', now)
    redis.call('PEXPIRE', keys[i], ttl)
  end
  return {0}
end
"""
