"""The state store's Lua scripts: every write that must be atomic across router instances.

Each script is the compare-and-set of one change together with its audit entry, its event and
the generation bump, so several instances (or an operator and the rollout controller) can
never both win, and an observed bare SET is recorded exactly once. Refused writes answer an
error reply whose first word names the refusal (refusals.py reads it).
"""

from __future__ import annotations

# Switch and observe are scripts so that "set active + write audit + remember what was
# recorded" is atomic: several instances observing one bare SET then record it exactly once.
# The switch is also the compare-and-set (`expect`) and ends a running rollout: two operators
# racing, or an operator racing the rollout controller, can never both win.
LUA_HELPERS = """
local function audit(key, maxlen, t, action, from, to, source, reason, forced)
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'action', action, 'from', from,
    'to', to, 'source', source, 'time', t, 'reason', reason or '', 'forced', forced or '')
end
-- The offline set as audited (keys.py offline_recorded): token-router's own offline/online
-- writes keep it in step, so only a change made past them (redis-cli SADD/SREM) differs.
local function note_offline(recorded, system, offline)
  if redis.call('EXISTS', recorded) == 0 then return end
  if offline then redis.call('SADD', recorded, system) else redis.call('SREM', recorded, system) end
end
-- Ends a running or paused rollout document in place; returns true when one was running.
local function end_rollout(key, state, t, why)
  local raw = redis.call('GET', key)
  if not raw then return false end
  local doc = cjson.decode(raw)
  if doc.state ~= 'running' and doc.state ~= 'paused' then return false end
  doc.state = state
  doc.ended_at = tonumber(t)
  doc.end_reason = why
  redis.call('SET', key, cjson.encode(doc))
  return doc
end
"""

SWITCH = (
    LUA_HELPERS
    + """
-- KEYS: active, recorded, offline, audit, events, rollout, generation, offline recorded
-- ARGV: new, source, time, maxlen, expect, reason, forced, action, known...
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
local gen = redis.call('INCR', KEYS[7])
redis.call('PUBLISH', KEYS[5], 'active')
return {from, gen}
"""
)

OBSERVE = (
    LUA_HELPERS
    + """
-- KEYS: active, recorded, audit, offline, rollout, events
-- ARGV: source, time, maxlen, known...
local active = redis.call('GET', KEYS[1])
if not active then return 0 end
local recorded = redis.call('GET', KEYS[2])
if active == recorded then return 0 end
-- A bare SET to an offline system is refused by the routers: not a switch, not recorded.
if redis.call('SISMEMBER', KEYS[4], active) == 1 then return 0 end
for i = 4, #ARGV do
  if ARGV[i] == active then
    audit(KEYS[3], ARGV[3], ARGV[2], 'switch', recorded or '', active, ARGV[1], '', '')
    redis.call('SET', KEYS[2], active)
    local ended = end_rollout(KEYS[5], 'ended', ARGV[2],
      'active set to ' .. active .. ' outside token-router (bare SET)')
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
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return redis.error_reply('CHANGED') end
if ARGV[11] ~= '' then
  local active = redis.call('GET', KEYS[5])
  if active ~= ARGV[11] then return redis.error_reply('EXPECT ' .. (active or '')) end
end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
audit(KEYS[2], ARGV[4], ARGV[3], ARGV[5], ARGV[7], ARGV[8], ARGV[6], ARGV[9], ARGV[10])
local gen = redis.call('INCR', KEYS[4])
redis.call('PUBLISH', KEYS[3], 'rollout')
return gen
"""
)

WATCH = (
    LUA_HELPERS
    + """
-- KEYS: watch, audit ; ARGV: expected ('' = none), new, time, maxlen, then optionally
-- action, source, from, to, reason: the compare-and-set of the watch document and its audit.
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
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

UNLEAD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

AFFINITY = """
-- KEYS[1]: one open-items key of the batch (routes the call in a cluster; see keys.py)
-- ARGV[1]: JSON [[affinity key, open key, system, ttl, member, expiry], ...]
-- An id another system holds is left to it: the first issuer keeps it (a short code two
-- systems drew alike must not move to the last one that reported it; see claim_affinity).
local records = cjson.decode(ARGV[1])
local written = 0
for _, r in ipairs(records) do
  local holder = redis.call('GET', r[1])
  if not holder or holder == r[3] then
    redis.call('SET', r[1], r[3], 'EX', r[4])
    if r[2] ~= '' then redis.call('ZADD', r[2], r[6], r[5]) end
    written = written + 1
  end
end
return written
"""

CLAIM = """
-- KEYS[1]: the affinity key
-- ARGV: system, ttl, open key ('' = not counted), open member, open expiry
-- Takes the id for ARGV[1] unless another system holds it; returns that system, or ''.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', ARGV[3], ARGV[5], ARGV[4]) end
return ''
"""

RESTORE = """
-- KEYS: epoch, active, offline, default mark
-- ARGV: new epoch, active ('' = leave), 'known'|'fresh', mark ttl, offline...
-- The first router to find the epoch missing writes it (and the offline marks it knew).
-- The active value is written where none is; a fresh router (no state of its own) marks
-- its value as a default. A router that knew the state replaces such a default while it
-- is unchanged: its last known state beats a newcomer's default. Returns {epoch, seeded}.
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
  for i = 5, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
end
return {epoch, seeded}
"""

OFFLINE = (
    LUA_HELPERS
    + """
-- KEYS: offline, audit, events, active, generation, offline recorded
-- ARGV: system, 1|0, source, time, maxlen, reason, forced, refuse if active (1|'')
if ARGV[2] == '1' and ARGV[8] == '1' and redis.call('GET', KEYS[4]) == ARGV[1] then
  return redis.error_reply('ACTIVE')
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
redis.call('INCR', KEYS[5])
redis.call('PUBLISH', KEYS[3], 'offline')
return changed
"""
)
