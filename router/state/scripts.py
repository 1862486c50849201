"""The state store's Lua scripts: every write that must be atomic across router instances.

Each script is the compare-and-set of one change together with its audit entry, its event and
the generation bump, so several instances (or an operator and the rollout controller) can
never both win, and an observed bare SET is recorded exactly once. Refused writes answer an
error reply whose first word names the refusal (refusals.py reads it).
"""

from __future__ import annotations

from router.state.keys import Keys


# Each script's KEYS, in the order it reads them (also the keys a refusal is diagnosed on).
def switch_keys(k: Keys) -> list[str]:
    return [k.active, k.recorded, k.offline, k.audit, k.events, k.rollout, k.generation] + [
        k.offline_recorded,
        k.offline_forced,
        k.default_seed,
    ]


def observe_keys(k: Keys) -> list[str]:
    return [k.active, k.recorded, k.audit, k.offline, k.rollout, k.events] + [
        k.offline_forced,
        k.offline_refused,
        k.default_seed,
    ]


def offline_keys(k: Keys) -> list[str]:
    return [k.offline, k.audit, k.events, k.active, k.generation] + [
        k.offline_recorded,
        k.offline_forced,
    ]


def restore_keys(k: Keys) -> list[str]:
    return [k.epoch, k.active, k.offline, k.default_seed, k.rollout, k.audit, k.events] + [
        k.offline_forced
    ]


# Switch and observe are scripts so that "set active + write audit + remember what was
# recorded" is atomic: several instances observing one bare SET then record it exactly once.
# The switch is also the compare-and-set (`expect`) and ends a running rollout: two operators
# racing, or an operator racing the rollout controller, can never both win.
LUA_HELPERS = """
local function audit(key, maxlen, t, action, from, to, source, reason, forced)
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'action', action, 'from', from,
    'to', to, 'source', source, 'time', t, 'reason', reason or '', 'forced', forced or '')
end
-- Checked before the first write: a key of another kind (redis-cli) would stop the script
-- half-way, with writes done and no rollback (a switch without its audit or counter).
-- Redis's own WRONGTYPE reply, so the caller names the key (key_problems.diagnose).
local function wrong_type(checks)
  for i = 1, #checks, 2 do
    local kind = redis.call('TYPE', checks[i]).ok
    if kind ~= 'none' and kind ~= checks[i + 1] then
      return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
    end
  end
  return nil
end
-- INCR of a counter someone overwrote with what INCR refuses: it starts again at 0 first,
-- so the write it belongs to completes (the routers read such a value as 0 meanwhile;
-- key_problems.parse_counter is the same rule).
local function bump(key)
  local raw = redis.call('GET', key)
  if raw and raw ~= '0' then
    local digits = string.match(raw, '^%-?([1-9]%d*)$')
    if not digits or #digits > 18 then redis.call('SET', key, '0') end
  end
  return redis.call('INCR', key)
end
local function text(value)
  if type(value) == 'string' then return value end
  return ''
end
-- The offline set as audited (keys.py offline_recorded): token-router's own offline/online
-- writes keep it in step, so only a change made past them (redis-cli SADD/SREM) differs.
local function note_offline(recorded, system, offline)
  if redis.call('EXISTS', recorded) == 0 then return end
  if offline then redis.call('SADD', recorded, system) else redis.call('SREM', recorded, system) end
end
-- Ends a running or paused rollout document in place; returns it when one was running. An
-- unusable document (redis-cli) is left alone: the routers route nothing by it and name it.
-- `kept`: an active system that does not overtake the rollout, the one it rolls away from
-- (an active value a router put back after Redis lost it is no switch).
local function end_rollout(key, state, t, why, kept)
  local raw = redis.call('GET', key)
  if not raw then return false end
  local ok, doc = pcall(cjson.decode, raw)
  if not ok or type(doc) ~= 'table' then return false end
  if doc.state ~= 'running' and doc.state ~= 'paused' then return false end
  if kept and doc.source == kept then return false end
  doc.state = state
  doc.ended_at = tonumber(t)
  doc.end_reason = why
  local encoded
  ok, encoded = pcall(cjson.encode, doc)
  if not ok then return false end
  redis.call('SET', key, encoded)
  return {source = text(doc.source), target = text(doc.target)}
end
"""

SWITCH = (
    LUA_HELPERS
    + """
-- KEYS: active, recorded, offline, audit, events, rollout, generation, offline recorded,
--       offline forced, default mark
-- ARGV: new, source, time, maxlen, expect, reason, forced, action, known...
local refused = wrong_type({KEYS[1], 'string', KEYS[2], 'string', KEYS[3], 'set',
  KEYS[4], 'stream', KEYS[6], 'string', KEYS[7], 'string', KEYS[8], 'set',
  KEYS[9], 'string'})
if refused then return refused end
local prev = redis.call('GET', KEYS[1])
if ARGV[5] ~= '' and prev ~= ARGV[5] then
  return redis.error_reply('EXPECT ' .. (prev or ''))
end
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  if ARGV[7] ~= '1' then return redis.error_reply('OFFLINE') end
  -- A forced switch to an offline system brings it online: routers refuse an active value
  -- that names an offline system, so the force would otherwise switch nothing.
  redis.call('SREM', KEYS[3], ARGV[1])
  note_offline(KEYS[8], ARGV[1], false)
  if redis.call('GET', KEYS[9]) == ARGV[1] then redis.call('DEL', KEYS[9]) end
  audit(KEYS[4], ARGV[4], ARGV[3], 'online', ARGV[1], ARGV[1], ARGV[2],
    'forced ' .. ARGV[8] .. ' to it', '1')
end
local recorded = redis.call('GET', KEYS[2])
local function known(v)
  for i = 9, #ARGV do if ARGV[i] == v then return true end end
  return false
end
-- A bare SET nobody has recorded yet is recorded first, so the history has no gap.
if prev and prev ~= recorded and known(prev) and redis.call('SISMEMBER', KEYS[3], prev) == 0 then
  audit(KEYS[4], ARGV[4], ARGV[3], 'switch', recorded or '', prev, 'external', '', '')
  recorded = prev
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[10])  -- an operator's choice is no newcomer's default (_RESTORE)
local from = recorded or ''
if ARGV[8] == 'promote' then
  end_rollout(KEYS[6], 'promoted', ARGV[3], ARGV[6])
else
  local why = ARGV[8] .. ' to ' .. ARGV[1] .. ' by ' .. ARGV[2]
  local ended = end_rollout(KEYS[6], 'ended', ARGV[3], why)
  if ended then
    audit(KEYS[4], ARGV[4], ARGV[3], 'rollout-end', ended.source, ended.target, ARGV[2],
      'ended by a ' .. ARGV[8] .. ' to ' .. ARGV[1], '')
  end
end
if from ~= ARGV[1] or ARGV[8] == 'promote' then
  audit(KEYS[4], ARGV[4], ARGV[3], ARGV[8], from, ARGV[1], ARGV[2], ARGV[6], ARGV[7])
end
redis.call('SET', KEYS[2], ARGV[1])
local gen = bump(KEYS[7])
redis.call('PUBLISH', KEYS[5], 'active')
return {from, gen}
"""
)

OBSERVE = (
    LUA_HELPERS
    + """
-- KEYS: active, recorded, audit, offline, rollout, events, offline forced, offline refused,
--       default mark
-- ARGV: source, time, maxlen, known...
local refused = wrong_type({KEYS[1], 'string', KEYS[2], 'string', KEYS[3], 'stream',
  KEYS[4], 'set', KEYS[5], 'string', KEYS[7], 'string', KEYS[8], 'string'})
if refused then return refused end
local active = redis.call('GET', KEYS[1])
local recorded = redis.call('GET', KEYS[2])
-- The established active system marked offline without token-router (a bare SADD: no
-- forced mark) is refused by the routers, like a bare SET of an offline system; recorded
-- once. A forced mark of a system no longer offline is stale and goes.
local forced = redis.call('GET', KEYS[7])
if forced and redis.call('SISMEMBER', KEYS[4], forced) == 0 then
  redis.call('DEL', KEYS[7])
  forced = false
end
local marked = active and active == recorded and forced ~= active
  and redis.call('SISMEMBER', KEYS[4], active) == 1
local noted = redis.call('GET', KEYS[8])
if marked and noted ~= active then
  redis.call('SET', KEYS[8], active)
  audit(KEYS[3], ARGV[3], ARGV[2], 'offline-refused', active, active, ARGV[1],
    active .. ' is the active system: its offline mark, added outside token-router, is '
    .. 'refused and new sessions still go to it (switch first, or token-router offline '
    .. active .. ' --force)', '')
elseif not marked and noted then
  redis.call('DEL', KEYS[8])
end
if not active then return 0 end
if active == recorded then return 0 end
-- A bare SET to an offline system is refused by the routers: not a switch, not recorded.
if redis.call('SISMEMBER', KEYS[4], active) == 1 then return 0 end
for i = 4, #ARGV do
  if ARGV[i] == active then
    audit(KEYS[3], ARGV[3], ARGV[2], 'switch', recorded or '', active, ARGV[1], '', '')
    -- A newcomer's default that the fleet moved away from is no default any more: a router
    -- that later finds the epoch changed must not put its own value back over a choice.
    local default = redis.call('GET', KEYS[9])
    if default and default ~= active then redis.call('DEL', KEYS[9]) end
    redis.call('SET', KEYS[2], active)
    local ended = end_rollout(KEYS[5], 'ended', ARGV[2],
      'active set to ' .. active .. ' outside token-router (bare SET)', active)
    if ended then
      audit(KEYS[3], ARGV[3], ARGV[2], 'rollout-end', ended.source, ended.target, ARGV[1],
        'active set to ' .. active .. ' outside token-router (bare SET)', '')
      redis.call('PUBLISH', KEYS[6], 'rollout')
    end
    return 1
  end
end
return 0
"""
)

OBSERVE_OFFLINE = (
    LUA_HELPERS
    + """
-- KEYS: offline, offline recorded, audit
-- ARGV: source, time, maxlen, active system (routing), known...
-- Records each difference between the offline set and its audited copy once: a SADD as
-- 'offline', a SREM as 'online' (source external). The first run only takes a copy (a new
-- deployment, or Redis back empty: the routers put the marks back, nobody made a change).
-- The active system in the set is a refused value, not a change: left for when it is not.
local refused = wrong_type({KEYS[1], 'set', KEYS[2], 'set', KEYS[3], 'stream'})
if refused then return refused end
local function known(v)
  for i = 5, #ARGV do if ARGV[i] == v then return true end end
  return false
end
local now = redis.call('SMEMBERS', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SADD', KEYS[2], '')
  for _, m in ipairs(now) do
    if m ~= ARGV[4] then redis.call('SADD', KEYS[2], m) end
  end
  return 0
end
local written = 0
for _, m in ipairs(now) do
  if m ~= ARGV[4] and known(m) and redis.call('SISMEMBER', KEYS[2], m) == 0 then
    audit(KEYS[3], ARGV[3], ARGV[2], 'offline', m, m, ARGV[1], 'SADD outside token-router', '')
    redis.call('SADD', KEYS[2], m)
    written = written + 1
  end
end
for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if m ~= '' and redis.call('SISMEMBER', KEYS[1], m) == 0 then
    audit(KEYS[3], ARGV[3], ARGV[2], 'online', m, m, ARGV[1], 'SREM outside token-router', '')
    redis.call('SREM', KEYS[2], m)
    written = written + 1
  end
end
return written
"""
)

ROLLOUT = (
    LUA_HELPERS
    + """
-- KEYS: rollout, audit, events, generation, active
-- ARGV: expected document ('' = none), new document ('' = delete), time, maxlen,
--       action, source, from, to, reason, forced, expected active system ('' = any)
local refused = wrong_type({KEYS[1], 'string', KEYS[2], 'stream', KEYS[4], 'string',
  KEYS[5], 'string'})
if refused then return refused end
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return redis.error_reply('CHANGED') end
if ARGV[11] ~= '' then
  local active = redis.call('GET', KEYS[5])
  if active ~= ARGV[11] then return redis.error_reply('EXPECT ' .. (active or '')) end
end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
audit(KEYS[2], ARGV[4], ARGV[3], ARGV[5], ARGV[7], ARGV[8], ARGV[6], ARGV[9], ARGV[10])
local gen = bump(KEYS[4])
redis.call('PUBLISH', KEYS[3], 'rollout')
return gen
"""
)

WATCH = (
    LUA_HELPERS
    + """
-- KEYS: watch, audit ; ARGV: expected ('' = none), new, time, maxlen, then optionally
-- action, source, from, to, reason: the compare-and-set of the watch document and its audit.
local refused = wrong_type({KEYS[1], 'string', KEYS[2], 'stream'})
if refused then return refused end
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return redis.error_reply('CHANGED') end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[5] then
  audit(KEYS[2], ARGV[4], ARGV[3], ARGV[5], ARGV[7], ARGV[8], ARGV[6], ARGV[9], '')
end
return 1
"""
)

LEADER = """
-- KEYS: leader ; ARGV: instance, ttl in ms. Take the lock if free, renew it if ours.
-- The lock holds nothing worth keeping: another kind of key there (redis-cli) is replaced,
-- and a holder with no expiry, which no router writes, gets one, so neither can stop
-- rollouts for good.
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'none' and kind ~= 'string' then redis.call('DEL', KEYS[1]) end
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

UNLEAD = """
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

HEARTBEAT = """
-- KEYS: instances ; ARGV: instance, document. The registry is rewritten by every instance
-- every beat: another kind of key there (redis-cli) is replaced rather than stop them all.
local kind = redis.call('TYPE', KEYS[1]).ok
local replaced = 0
if kind ~= 'none' and kind ~= 'hash' then
  redis.call('DEL', KEYS[1])
  replaced = 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return replaced
"""

AFFINITY = """
-- KEYS[1]: one open-items key of the batch (routes the call in a cluster; see keys.py)
-- ARGV[1]: JSON [[affinity key, open key, system, ttl, member, expiry,
--                 issued key, issued value, seconds counted], ...]
-- An id another system holds is left to it: the first issuer keeps it (a short code two
-- systems drew alike must not move to the last one that reported it; see claim_affinity).
local records = cjson.decode(ARGV[1])
local written = 0
for _, r in ipairs(records) do
  local holder = redis.call('GET', r[1])
  if not holder or holder == r[3] then
    redis.call('SET', r[1], r[3], 'EX', r[4])
    if r[2] ~= '' then
      redis.call('ZADD', r[2], r[6], r[5])
      if r[7] ~= '' then redis.call('SET', r[7], r[8], 'EX', r[9]) end
    end
    written = written + 1
  end
end
return written
"""

CLAIM = """
-- KEYS[1]: the affinity key
-- ARGV: system, ttl, open key ('' = not counted), open member, open expiry,
--       issued key ('' = none), issued value, seconds counted
-- Takes the id for ARGV[1] unless another system holds it; returns that system, or ''.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZADD', ARGV[3], ARGV[5], ARGV[4])
  if ARGV[6] ~= '' then redis.call('SET', ARGV[6], ARGV[7], 'EX', ARGV[8]) end
end
return ''
"""

RESTORE = (
    LUA_HELPERS
    + """
-- KEYS: epoch, active, offline, default mark, rollout, audit, events, offline forced
-- ARGV: new epoch, active ('' = leave), 'known'|'fresh', mark ttl, rollout document ('' =
--       none), time, audit maxlen, source, from, to, reason, offline...
-- The first router to find the epoch missing writes it (and the offline marks it knew).
-- The active value is written where none is; a fresh router (no state of its own) marks
-- its value as a default. A router that knew the state replaces such a default while it
-- is unchanged: its last known state beats a newcomer's default. Returns {epoch, seeded}.
local refused = wrong_type({KEYS[1], 'string', KEYS[2], 'string', KEYS[3], 'set',
  KEYS[4], 'string', KEYS[5], 'string', KEYS[6], 'stream'})
if refused then return refused end
local epoch = redis.call('GET', KEYS[1])
local created = false
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  epoch = ARGV[1]
  created = true
end
local seeded = 0
if ARGV[2] ~= '' then
  local current = redis.call('GET', KEYS[2])
  if not current then
    redis.call('SET', KEYS[2], ARGV[2])
    seeded = 1
    if ARGV[3] == 'fresh' then
      redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[4])
    end
  elseif ARGV[3] == 'known' and current ~= ARGV[2]
      and redis.call('GET', KEYS[4]) == current then
    redis.call('SET', KEYS[2], ARGV[2])
    redis.call('DEL', KEYS[4])
    seeded = 1
  end
end
if created then
  for i = 12, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
  -- A router offers the active system as offline only when token-router put it there.
  local now_active = redis.call('GET', KEYS[2])
  if now_active and redis.call('SISMEMBER', KEYS[3], now_active) == 1 then
    redis.call('SET', KEYS[8], now_active)
  end
end
-- The running rollout a router knew, where Redis lost it (every router that knew it offers
-- it; the first puts it back, once, and the audit says so).
if ARGV[5] ~= '' and redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('SET', KEYS[5], ARGV[5])
  audit(KEYS[6], ARGV[7], ARGV[6], 'rollout-restore', ARGV[9], ARGV[10], ARGV[8], ARGV[11], '')
  redis.call('PUBLISH', KEYS[7], 'rollout')
end
return {epoch, seeded}
"""
)

OFFLINE = (
    LUA_HELPERS
    + """
-- KEYS: offline, audit, events, active, generation, offline recorded, offline forced
-- ARGV: system, 1|0, source, time, maxlen, reason, forced, refuse if active (1|'')
local refused = wrong_type({KEYS[1], 'set', KEYS[2], 'stream', KEYS[4], 'string',
  KEYS[5], 'string', KEYS[6], 'set', KEYS[7], 'string'})
if refused then return refused end
if ARGV[2] == '1' and ARGV[8] == '1' and redis.call('GET', KEYS[4]) == ARGV[1] then
  return redis.error_reply('ACTIVE')
end
-- Marking the active system offline takes force here; the mark that says so is what lets
-- the routers tell it from a bare SADD (refused).
if ARGV[2] == '1' and redis.call('GET', KEYS[4]) == ARGV[1] then
  redis.call('SET', KEYS[7], ARGV[1])
elseif ARGV[2] ~= '1' and redis.call('GET', KEYS[7]) == ARGV[1] then
  redis.call('DEL', KEYS[7])
end
local changed
if ARGV[2] == '1' then
  changed = redis.call('SADD', KEYS[1], ARGV[1])
else
  changed = redis.call('SREM', KEYS[1], ARGV[1])
end
note_offline(KEYS[6], ARGV[1], ARGV[2] == '1')
if changed == 1 then
  local action = 'online'
  if ARGV[2] == '1' then action = 'offline' end
  audit(KEYS[2], ARGV[5], ARGV[4], action, ARGV[1], ARGV[1], ARGV[3], ARGV[6], ARGV[7])
end
bump(KEYS[5])
redis.call('PUBLISH', KEYS[3], 'offline')
return changed
"""
)
