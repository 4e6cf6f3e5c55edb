"""The Lua scripts behind proxy/state/stores_redis.py: each runs atomically in Redis.

Times come from `redis.call('TIME')`, so instances with skewed clocks agree.
Numbers leave Lua as strings (Redis would truncate floats to integers).
"""

from __future__ import annotations

_NOW_US = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# KEYS[1] theoretical arrival time (µs); ARGV period_us, limit, amount, take|adjust
GCRA = _NOW_US + """
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local ok, retry = 1, 0
if ARGV[4] == 'take' then
  local new = tat + amount * interval
  if amount > limit or new - now > period + 1 then
    ok = 0
    retry = new - now - period
  else
    tat = new
  end
else
  tat = math.max(now, tat + amount * interval)
end
if tat > now then
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
else
  redis.call('DEL', KEYS[1])
end
return {ok, string.format('%.0f', tat - now), string.format('%.0f', retry)}
"""

# KEYS[1], KEYS[2] two buckets (a key's requests and tokens); ARGV period_us, limit1,
# amount1, limit2, amount2. Both are taken or neither: one round trip, no undo.
GCRA_PAIR = _NOW_US + """
local period = tonumber(ARGV[1])
local function look(key, limit, amount)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new = tat + amount * (period / limit)
  if amount > limit or new - now > period + 1 then
    return 0, tat, new - now - period
  end
  return 1, tat, new
end
local ok1, tat1, x1 = look(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
local ok2, tat2, x2 = look(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]))
local out = {}
if ok1 == 1 and ok2 == 1 then
  for i, pair in ipairs({{KEYS[1], x1}, {KEYS[2], x2}}) do
    if pair[2] > now then
      redis.call('SET', pair[1], string.format('%.0f', pair[2]), 'PX',
                 math.ceil((pair[2] - now) / 1000) + 1000)
    end
  end
  out = {1, string.format('%.0f', x1 - now), '0', 1, string.format('%.0f', x2 - now), '0'}
else
  -- neither is taken: each reports its level, and a refused one how long to wait
  out = {ok1, string.format('%.0f', tat1 - now), ok1 == 1 and '0' or string.format('%.0f', x1),
         ok2, string.format('%.0f', tat2 - now), ok2 == 1 and '0' or string.format('%.0f', x2)}
end
return out
"""

# KEYS[1] hash instance id -> in flight; ARGV limit, my instance id, heartbeat key prefix
ACQUIRE = """
local counts = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #counts, 2 do
  local id, n = counts[i], tonumber(counts[i + 1])
  if id ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. id) == 0 then
    redis.call('HDEL', KEYS[1], id)  -- a dead instance's requests are not running
  else
    total = total + n
  end
end
if total >= tonumber(ARGV[1]) then return {0, total} end
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
redis.call('PEXPIRE', KEYS[1], 3600000)
return {1, total + 1}
"""

RELEASE = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
"""

# Per scope three keys: b (spent, held), bh (rid -> amount), bx (rid -> expiry ms).
_PURGE = """
local function purge(b, bh, bx, now_ms)
  local dead = redis.call('ZRANGEBYSCORE', bx, '-inf', now_ms)
  for _, id in ipairs(dead) do
    local amt = tonumber(redis.call('HGET', bh, id) or '0')
    redis.call('HDEL', bh, id)
    redis.call('ZREM', bx, id)
    redis.call('HINCRBYFLOAT', b, 'held', -amt)
  end
  if redis.call('HLEN', bh) == 0 and redis.call('HEXISTS', b, 'held') == 1 then
    redis.call('HSET', b, 'held', '0')  -- no float drift once nothing is held
  end
end
local function expire(b, bh, bx, at)
  if at ~= '0' then  -- a day after the period, and never in the past (skewed clocks)
    local t = math.max(tonumber(at), math.floor(now / 1000000) + 86400)
    redis.call('EXPIREAT', b, t)
    redis.call('EXPIREAT', bh, t)
    redis.call('EXPIREAT', bx, t)
  end
end
"""

# ARGV amount, rid, hold_ttl_ms, expire_at x n, limit x n -> {blocked index or 0, used}
RESERVE = _NOW_US + _PURGE + """
local now_ms = math.floor(now / 1000)
local amount, rid, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local n = #KEYS / 3
local used, blocked = {}, 0
for i = 1, n do
  local b, bh, bx = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  purge(b, bh, bx, now_ms)
  local spent = tonumber(redis.call('HGET', b, 'spent') or '0')
  local held = math.max(0, tonumber(redis.call('HGET', b, 'held') or '0'))
  used[2 * i - 1], used[2 * i] = tostring(spent), tostring(held)
  if blocked == 0 and spent + held + amount > tonumber(ARGV[3 + n + i]) + 1e-12 then
    blocked = i
  end
end
if blocked == 0 then
  for i = 1, n do
    local b, bh, bx = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
    if redis.call('HSETNX', bh, rid, tostring(amount)) == 1 then
      redis.call('ZADD', bx, now_ms + ttl, rid)
      used[2 * i] = redis.call('HINCRBYFLOAT', b, 'held', amount)
    end
    expire(b, bh, bx, ARGV[3 + i])
  end
end
return {blocked, used}
"""

# KEYS[1] done marker, then triples; ARGV rid, actual, done_ttl_ms, expire_at x n
SETTLE = _NOW_US + _PURGE + """
local rid, actual = ARGV[1], tonumber(ARGV[2])
local n = (#KEYS - 1) / 3
local counted = 0
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then counted = 1 end
local used = {}
for i = 1, n do
  local b, bh, bx = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  if counted == 1 then
    local amt = redis.call('HGET', bh, rid)
    if amt then
      redis.call('HDEL', bh, rid)
      redis.call('ZREM', bx, rid)
      redis.call('HINCRBYFLOAT', b, 'held', -tonumber(amt))
    end
    if actual ~= 0 then redis.call('HINCRBYFLOAT', b, 'spent', actual) end
    if redis.call('HLEN', bh) == 0 then redis.call('HSET', b, 'held', '0') end
    expire(b, bh, bx, ARGV[3 + i])
  end
  used[2 * i - 1] = redis.call('HGET', b, 'spent') or '0'
  used[2 * i] = redis.call('HGET', b, 'held') or '0'
end
return {counted, used}
"""

# KEYS[1] b:SCOPE; ARGV ledger total, expire_at. Once per scope: max, never a sum.
SEED = _NOW_US + """
if redis.call('HSETNX', KEYS[1], 'seeded', '1') == 1 then
  local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
  if tonumber(ARGV[1]) > spent then redis.call('HSET', KEYS[1], 'spent', ARGV[1]) end
  if ARGV[2] ~= '0' then
    redis.call('EXPIREAT', KEYS[1], math.max(tonumber(ARGV[2]), math.floor(now / 1000000) + 86400))
  end
end
return {redis.call('HGET', KEYS[1], 'spent') or '0', redis.call('HGET', KEYS[1], 'held') or '0'}
"""

USED = """
local used = {}
for i = 1, #KEYS / 3 do
  used[2 * i - 1] = redis.call('HGET', KEYS[3 * i - 2], 'spent') or '0'
  used[2 * i] = redis.call('HGET', KEYS[3 * i - 2], 'held') or '0'
end
return used
"""

# KEYS[1] cool-down marker; ARGV ms. Only ever lengthened.
COOL = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""

# KEYS[1] one hash for every instance's tokens in flight: field '@ID' = the instance's
# expiry (ms), 'ID|LABEL' = its tokens on that target. ARGV instance id, ttl ms, then
# label, tokens pairs. Replaces this instance's fields, drops expired instances', and
# returns the others' label, tokens pairs.
TOKENS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
local all = redis.call('HGETALL', KEYS[1])
local alive = {}
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 1) == '@' and tonumber(all[i + 1]) > now then
    alive[string.sub(all[i], 2)] = true
  end
end
local out = {}
for i = 1, #all, 2 do
  local field = all[i]
  local owner = string.sub(field, 1, 1) == '@' and string.sub(field, 2)
                or string.match(field, '^([^|]*)|')
  if owner == me or not alive[owner] then
    redis.call('HDEL', KEYS[1], field)
  elseif string.sub(field, 1, 1) ~= '@' then
    out[#out + 1] = string.sub(field, #owner + 2)
    out[#out + 1] = all[i + 1]
  end
end
redis.call('HSET', KEYS[1], '@' .. me, now + tonumber(ARGV[2]))
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], me .. '|' .. ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 4)
return out
"""

SCRIPTS = {"gcra": GCRA, "gcra_pair": GCRA_PAIR, "acquire": ACQUIRE, "release": RELEASE, "reserve": RESERVE,
           "settle": SETTLE, "seed": SEED, "used": USED, "cool": COOL, "tokens": TOKENS}
