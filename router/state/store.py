"""The state store: one protocol, a Redis implementation and an in-process `memory://` one.

Everything shared between router instances goes through here: the active system, the
offline set, affinity (who issued a token or short code), open-item counts for drain and
the audit stream. Every method raises `StoreUnavailable` when the store cannot answer; the
callers decide what fail-static means for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
from redis.exceptions import RedisError, ResponseError

from router.errors import BadRequest, Conflict, GateRefused, StoreUnavailable
from router.state import rollout as rollout_model
from router.state.key_types import (
    KeyProblem,
    diagnose,
    is_wrong_type,
    parse_counter,
    unusable_value,
)
from router.state.keys import Keys
from router.state.redis_client import close_client, describe, redis_client, unavailable
from router.state.sentinel import SentinelTarget

log = logging.getLogger("router.store")

AUDIT_MAXLEN = 10_000
Change = Literal["subscribed", "event", "tick"]
# session: a token; code: a Live Assist short code; cid: a Live Assist correlation id
# learned from a short-code look-up answer (owned like its code, never counted as open).
AffinityKind = Literal["session", "code", "cid"]


@dataclass(frozen=True, slots=True)
class StoredState:
    """The dynamic state as read from the store, not yet validated against the config."""

    active: str | None
    offline: frozenset[str]
    recorded: str | None = None  # the last valid active value the audit stream recorded
    epoch: str | None = None  # '<id>:<time>' of this Redis lifetime (keys.Keys.epoch)
    restoring: float | None = None  # when routers last began writing back lost state
    rollout: str | None = None  # the rollout document (JSON) as stored, if any
    generation: int = 0  # bumped by every write through token-router (confirmations)
    offline_forced: str | None = None  # the active system token-router took offline (forced)
    # Keys that hold something token-router cannot use (the wrong kind of value, or a value
    # it cannot parse), each with its fix; and which of the fields above could therefore not
    # be read ("offline", "epoch", ...): their value here is the empty one, not the truth.
    problems: tuple[KeyProblem, ...] = ()
    unreadable: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SwitchResult:
    """What a switch did: the system active before (audit's view) and the new generation."""

    previous: str
    generation: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    time: float
    action: str
    source: str
    from_: str
    to: str
    reason: str = ""
    forced: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "action": self.action,
            "source": self.source,
            "from": self.from_,
            "to": self.to,
            "reason": self.reason or None,
            "forced": self.forced,
        }


@dataclass(frozen=True, slots=True)
class AffinityRecord:
    kind: AffinityKind
    ident: str
    system: str
    ttl: int  # seconds the owner is remembered
    open_ttl: int | None = None  # seconds it counts as open for drain (None: ttl)

    @property
    def counted(self) -> int:
        return self.ttl if self.open_ttl is None else self.open_ttl


@dataclass(frozen=True, slots=True)
class RolloutRestore:
    """A rollout document to put back into a Redis that lost it, with its audit entry."""

    document: str
    source: str
    from_: str
    to: str
    reason: str


@dataclass(frozen=True, slots=True)
class AuditFields:
    """One audit entry to write with a state change (the script writes time and id)."""

    action: str
    source: str
    from_: str = ""
    to: str = ""
    reason: str = ""
    forced: bool = False


def expect_error(message: str, expected: str) -> GateRefused:
    """The compare-and-set refusal, from a script's `EXPECT <actual>` error."""
    actual = message.split("EXPECT", 1)[1].strip() or "(none)"
    return GateRefused(
        "expect",
        f"the active system is {actual}, not {expected}: someone else changed it; "
        "look again (token-router status) and retry with the right --expect",
        system=actual,
        overridable=False,
    )


class StateStore(Protocol):
    """What the router needs from shared state. `RedisStore` and `MemoryStore` implement it."""

    description: str

    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def read_state(self) -> StoredState: ...
    def changes(self, tick: float) -> AsyncIterator[Change]: ...
    async def seed_active(self, system: str) -> bool: ...
    async def restore(
        self,
        epoch: str,
        active: str,
        offline: Sequence[str],
        *,
        known: bool = False,
        rollout: RolloutRestore | None = None,
    ) -> tuple[str, bool]: ...
    async def mark_restoring(self, now: float) -> None: ...
    async def persistence(self) -> str: ...
    async def switch(self, system: str, source: str, known: Sequence[str]) -> str: ...
    async def change_active(
        self,
        system: str,
        source: str,
        known: Sequence[str],
        *,
        expect: str | None = None,
        reason: str = "",
        forced: bool = False,
        action: str = "switch",
    ) -> SwitchResult: ...
    async def set_offline(
        self,
        system: str,
        offline: bool,
        source: str,
        *,
        reason: str = "",
        forced: bool = False,
        refuse_active: bool = False,
    ) -> None: ...
    async def write_rollout(
        self, expected: str | None, new: str | None, entry: AuditFields, *, expect_active: str = ""
    ) -> int: ...
    async def add_rollout_counts(
        self, rollout_id: str, step: int, deltas: Mapping[str, tuple[int, int]]
    ) -> None: ...
    async def rollout_counts(self, rollout_id: str, step: int) -> dict[str, tuple[int, int]]: ...
    async def hold_leader(self, instance: str, ttl: float) -> bool: ...
    async def leader(self) -> str | None: ...
    async def release_leader(self, instance: str) -> None: ...
    async def heartbeat(self, instance: str, document: Mapping[str, Any]) -> None: ...
    async def instances(self, now: float, stale_after: float) -> list[dict[str, Any]]: ...
    async def remove_instance(self, instance: str) -> None: ...
    async def record_observed(self, source: str, known: Sequence[str]) -> bool: ...
    async def audit(self, count: int) -> list[AuditEntry]: ...
    async def write_affinity(self, records: Sequence[AffinityRecord], now: float) -> None: ...
    async def lookup_affinity(self, kind: AffinityKind, ident: str) -> str | None: ...
    async def affinity_entry(self, kind: AffinityKind, ident: str) -> tuple[str, float] | None: ...
    async def claim_affinity(self, record: AffinityRecord, now: float) -> str | None: ...
    async def release(self, kind: AffinityKind, ident: str, system: str) -> None: ...
    async def open_counts(self, systems: Sequence[str], now: float) -> dict[str, int]: ...
    async def mark_preview(self, system: str, ttl: int) -> None: ...
    async def previewing(self, systems: Sequence[str]) -> frozenset[str]: ...


def persistence_mode(appendonly: str | None, save: str | None) -> str:
    """'aof', 'rdb', 'aof+rdb', 'none', or 'unknown' (CONFIG GET refused or not answered)."""
    if appendonly is None or save is None:
        return "unknown"
    modes = []
    if appendonly.strip().lower() == "yes":
        modes.append("aof")
    if save.strip():
        modes.append("rdb")
    return "+".join(modes) or "none"


# Seconds a fresh router's default seed can be replaced by a router that knew the state:
# longer than any reconnect backoff (redis_retry_max), short enough to never surprise.
DEFAULT_MARK_TTL = 60

# Seconds the "restoring" mark lives: far longer than any write-back, short enough to vanish.
RESTORING_TTL = 60


def _float_or_none(value: str | None) -> float | None:
    try:
        number = None if value is None else float(value)
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


ROLLOUT_COUNTS_TTL = 86_400  # a step's counts outlive any sane interval, then go


def parse_counts(raw: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """`<system>:requests` / `<system>:failures` fields -> {system: (requests, failures)}."""
    out: dict[str, tuple[int, int]] = {}
    for name, value in raw.items():
        system, _, what = name.rpartition(":")
        number = parse_counter(value)
        if number is None or number < 0 or what not in ("requests", "failures"):
            continue  # not written by a router (HINCRBY): a stray field is no count
        requests, failures = out.get(system, (0, 0))
        if what == "requests":
            requests = number
        else:
            failures = number
        out[system] = (requests, failures)
    return out


# Seconds an instance's clock may run ahead of the reader's and its beat still count.
HEARTBEAT_SKEW = 3600.0


def _heartbeat(value: str | bytes, now: float, stale_after: float) -> dict[str, Any] | None:
    """A live instance's heartbeat document, or None when it is stale or was not written by
    a router (a stray `redis-cli HSET` is pruned like a dead instance)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        return None
    seen, applied = doc.get("seen"), doc.get("applied", {})
    if isinstance(seen, bool) or not isinstance(seen, int | float) or not math.isfinite(seen):
        return None
    if not isinstance(applied, dict):
        return None
    generation = applied.get("generation", 0)
    if isinstance(generation, bool) or not isinstance(generation, int):
        return None
    # Silent for too long, or "seen" further ahead than any host's clock drifts (a stray
    # document would otherwise stay live for ever and hold every confirmation up): not live.
    if not -HEARTBEAT_SKEW <= now - seen <= stale_after:
        return None
    return doc


def split_instances(
    raw: Mapping[str, str | bytes], now: float, stale_after: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """(live heartbeat documents sorted by id, ids of stale or unreadable ones)."""
    live: list[dict[str, Any]] = []
    stale: list[str] = []
    for ident, value in raw.items():
        doc = _heartbeat(value, now, stale_after)
        if doc is None:
            stale.append(ident)
        else:
            live.append(doc)
    return sorted(live, key=lambda d: str(d.get("id"))), stale


def rollout_problem(keys: Keys, raw: str | None) -> KeyProblem | None:
    """The stored rollout document's problem, if it cannot be used (rollout.parse)."""
    if not raw:
        return None
    try:
        rollout_model.parse(raw)
    except BadRequest as exc:
        return unusable_value(keys, keys.rollout, raw, f"not a rollout document: {exc}")
    return None


def _member(kind: AffinityKind, ident: str) -> str:
    return f"{kind}:{ident}"


# Switch and observe are scripts so that "set active + write audit + remember what was
# recorded" is atomic: several instances observing one bare SET then record it exactly once.
# The switch is also the compare-and-set (`expect`) and ends a running rollout: two operators
# racing, or an operator racing the rollout controller, can never both win.
_LUA_HELPERS = """
local function audit(key, maxlen, t, action, from, to, source, reason, forced)
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'action', action, 'from', from,
    'to', to, 'source', source, 'time', t, 'reason', reason or '', 'forced', forced or '')
end
-- Checked before the first write: a key of another kind (redis-cli) would stop the script
-- half-way, with writes done and no rollback (a switch without its audit or counter).
-- Redis's own WRONGTYPE reply, so the caller names the key (key_types.diagnose).
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
-- key_types.parse_counter is the same rule).
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

_SWITCH = (
    _LUA_HELPERS
    + """
-- KEYS: active, recorded, offline, audit, events, rollout, generation, offline forced,
--       default mark
-- ARGV: new, source, time, maxlen, expect, reason, forced, action, known...
local refused = wrong_type({KEYS[1], 'string', KEYS[2], 'string', KEYS[3], 'set',
  KEYS[4], 'stream', KEYS[6], 'string', KEYS[7], 'string', KEYS[8], 'string'})
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
  if redis.call('GET', KEYS[8]) == ARGV[1] then redis.call('DEL', KEYS[8]) end
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
redis.call('DEL', KEYS[9])  -- an operator's choice is no newcomer's default (_RESTORE)
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

_OBSERVE = (
    _LUA_HELPERS
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

_ROLLOUT = (
    _LUA_HELPERS
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

_LEADER = """
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

_UNLEAD = """
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_HEARTBEAT = """
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

_AFFINITY = """
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

_CLAIM = """
-- KEYS[1]: the affinity key
-- ARGV: system, ttl, open key ('' = not counted), open member, open expiry
-- Takes the id for ARGV[1] unless another system holds it; returns that system, or ''.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', ARGV[3], ARGV[5], ARGV[4]) end
return ''
"""

_RESTORE = (
    _LUA_HELPERS
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

_OFFLINE = (
    _LUA_HELPERS
    + """
-- KEYS: offline, audit, events, active, generation, offline forced
-- ARGV: system, 1|0, source, time, maxlen, reason, forced, refuse if active (1|'')
local refused = wrong_type({KEYS[1], 'set', KEYS[2], 'stream', KEYS[4], 'string',
  KEYS[5], 'string', KEYS[6], 'string'})
if refused then return refused end
if ARGV[2] == '1' and ARGV[8] == '1' and redis.call('GET', KEYS[4]) == ARGV[1] then
  return redis.error_reply('ACTIVE')
end
-- Marking the active system offline takes force here; the mark that says so is what lets
-- the routers tell it from a bare SADD (refused).
if ARGV[2] == '1' and redis.call('GET', KEYS[4]) == ARGV[1] then
  redis.call('SET', KEYS[6], ARGV[1])
elseif ARGV[2] ~= '1' and redis.call('GET', KEYS[6]) == ARGV[1] then
  redis.call('DEL', KEYS[6])
end
local changed
if ARGV[2] == '1' then
  changed = redis.call('SADD', KEYS[1], ARGV[1])
else
  changed = redis.call('SREM', KEYS[1], ARGV[1])
end
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


def active_error(system: str) -> GateRefused:
    return GateRefused(
        "active",
        f"{system} is the active system: marking it offline refuses every new session; "
        "switch to another system first",
        system=system,
    )


def offline_error(system: str) -> GateRefused:
    return GateRefused(
        "offline",
        f"system {system!r} is marked offline; bring it online before switching "
        "(or force, which brings it online)",
        system=system,
    )


async def _close_pubsub(pubsub: Any) -> None:
    # redis-py before 8 ships PubSub.aclose without annotations (an untyped call under
    # --strict) and annotates it from 8 on: going through Any holds on both, where a
    # `type: ignore` would be unused on one of them.
    await pubsub.aclose()


class RedisStore:
    """The shared store: one Redis (or Sentinel/Cluster through redis-py) for all instances."""

    def __init__(
        self,
        url: str | SentinelTarget,
        keys: Keys,
        *,
        timeout: float = 1.0,
        keyspace_events: bool = True,
    ) -> None:
        self.description = describe(url)
        self.keys = keys
        self.keyspace_events = keyspace_events
        self.keyspace_note = ""
        self._client = redis_client(
            url, timeout=timeout, decode_responses=True, client_name="token-router"
        )
        self._db = int(self._client.connection_pool.connection_kwargs.get("db", 0) or 0)
        self._switch = self._client.register_script(_SWITCH)
        self._observe = self._client.register_script(_OBSERVE)
        self._offline = self._client.register_script(_OFFLINE)
        self._affinity = self._client.register_script(_AFFINITY)
        self._claim = self._client.register_script(_CLAIM)
        self._restore = self._client.register_script(_RESTORE)
        self._rollout = self._client.register_script(_ROLLOUT)
        self._leader = self._client.register_script(_LEADER)
        self._unlead = self._client.register_script(_UNLEAD)
        self._heartbeat = self._client.register_script(_HEARTBEAT)

    async def close(self) -> None:
        await close_client(self._client)

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return unavailable(self.description, exc)

    async def _failure(self, exc: BaseException, *touched: str) -> StoreUnavailable:
        """The error for a failed command on `touched` keys: a key of the wrong type is
        named with its fix (Redis is up), anything else is "unavailable"."""
        if is_wrong_type(exc):
            return await diagnose(self._client, self.keys, touched, exc)
        return self._unavailable(exc)

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def read_state(self) -> StoredState:
        """The dynamic state. A key that holds something unusable does not stop the read:
        it is named in `problems` with its fix and its field reads as absent (listed in
        `unreadable`), so routing still follows `active`. Only `active` itself of the wrong
        kind fails the read (WrongKeyType): there is nothing to follow then."""
        k = self.keys
        names = (
            k.active,
            k.offline,
            k.recorded,
            k.epoch,
            k.restoring,
            k.rollout,
            k.generation,
            k.offline_forced,
        )
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(k.active)
                pipe.smembers(k.offline)
                pipe.get(k.recorded)
                pipe.get(k.epoch)
                pipe.get(k.restoring)
                pipe.get(k.rollout)
                pipe.get(k.generation)
                pipe.get(k.offline_forced)
                results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, *names) from exc
        problems: list[KeyProblem] = []
        unreadable: set[str] = set()
        fields = (
            "active",
            "offline",
            "recorded",
            "epoch",
            "restoring",
            "rollout",
            "generation",
            "offline_forced",
        )
        values: dict[str, Any] = {}
        for field_name, key, result in zip(fields, names, results, strict=True):
            if not isinstance(result, Exception):
                values[field_name] = result
                continue
            if not is_wrong_type(result) or field_name == "active":
                raise await self._failure(result, key)
            wrong = await diagnose(self._client, k, [key], result)
            problems.append(KeyProblem(key, str(wrong)))
            unreadable.add(field_name)
            values[field_name] = None
        generation = parse_counter(values["generation"])
        if generation is None:
            why = "not an integer counter; the next change through token-router restarts it"
            problems.append(unusable_value(k, k.generation, values["generation"], why))
            unreadable.add("generation")
        if (found := rollout_problem(k, values["rollout"])) is not None:
            problems.append(found)
            unreadable.add("rollout")
        return StoredState(
            active=values["active"],
            offline=frozenset(values["offline"] or ()),
            recorded=values["recorded"],
            rollout=values["rollout"],
            generation=generation or 0,
            epoch=values["epoch"],
            restoring=_float_or_none(values["restoring"]),
            offline_forced=values["offline_forced"],
            problems=tuple(problems),
            unreadable=frozenset(unreadable),
        )

    async def persistence(self) -> str:
        """How the server persists its data (recovery.persistence_mode); never raises."""
        try:
            found = await self._client.config_get("appendonly")
            saves = await self._client.config_get("save")
        except (RedisError, OSError):
            return persistence_mode(None, None)
        return persistence_mode(found.get("appendonly"), saves.get("save"))

    async def mark_restoring(self, now: float) -> None:
        try:
            await self._client.set(self.keys.restoring, f"{now:.3f}", ex=RESTORING_TTL)
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.restoring) from exc

    async def _enable_keyspace_events(self) -> None:
        """Add K (keyspace), $ (strings), s (sets) and g (DEL, EXPIRE) to the server's flags.

        Merged with what is there, never overwritten, because other applications may rely
        on the flags already set. Managed Redis often forbids CONFIG: then the resync tick is
        the propagation path, which the log line says.
        """
        try:
            flags = await self._client.config_get("notify-keyspace-events")
            current = str(flags.get("notify-keyspace-events") or "")
            wanted = set(current) | set("K$sg")
            if "A" in wanted:
                wanted -= set("$sg")
            if wanted != set(current):
                await self._client.config_set("notify-keyspace-events", "".join(sorted(wanted)))
            self.keyspace_note = ""
        except ResponseError as exc:
            self.keyspace_note = f"keyspace notifications unavailable ({exc})"

    async def changes(self, tick: float) -> AsyncIterator[Change]:
        """Yield "subscribed" once listening, then "event" on any change, "tick" otherwise."""
        pubsub = self._client.pubsub()
        try:
            try:
                if self.keyspace_events:
                    await self._enable_keyspace_events()
                await pubsub.subscribe(self.keys.events, *self.keys.keyspace_channels(self._db))
            except (RedisError, OSError) as exc:
                raise self._unavailable(exc) from exc
            yield "subscribed"
            while True:
                try:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=tick)
                except (RedisError, OSError) as exc:
                    raise self._unavailable(exc) from exc
                yield "event" if message is not None else "tick"
        finally:
            # Closing must not hang on a dead socket: the watcher is waiting to reconnect.
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(_close_pubsub(pubsub), timeout=1.0)

    async def seed_active(self, system: str) -> bool:
        try:
            return bool(await self._client.set(self.keys.active, system, nx=True))
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.active) from exc

    async def restore(
        self,
        epoch: str,
        active: str,
        offline: Sequence[str],
        *,
        known: bool = False,
        rollout: RolloutRestore | None = None,
    ) -> tuple[str, bool]:
        """Put back the epoch, the active system, offline marks and the running rollout
        (see _RESTORE). `known`: `active` is this router's last known state, not a default."""
        k = self.keys
        back = rollout or RolloutRestore("", "", "", "", "")
        touched = (k.epoch, k.active, k.offline, k.default_seed, k.rollout, k.audit)
        try:
            found, seeded = await self._restore(
                keys=[*touched, k.events, k.offline_forced],
                args=[
                    epoch,
                    active,
                    "known" if known else "fresh",
                    DEFAULT_MARK_TTL,
                    back.document,
                    f"{time.time():.3f}",
                    AUDIT_MAXLEN,
                    back.source,
                    back.from_,
                    back.to,
                    back.reason,
                    *offline,
                ],
            )
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, *touched) from exc
        return str(found), bool(seeded)

    async def switch(self, system: str, source: str, known: Sequence[str]) -> str:
        return (await self.change_active(system, source, known)).previous

    async def change_active(
        self,
        system: str,
        source: str,
        known: Sequence[str],
        *,
        expect: str | None = None,
        reason: str = "",
        forced: bool = False,
        action: str = "switch",
    ) -> SwitchResult:
        k = self.keys
        switched = (
            k.active,
            k.recorded,
            k.offline,
            k.audit,
            k.rollout,
            k.generation,
            k.offline_forced,
        )
        try:
            previous, generation = await self._switch(
                keys=[
                    k.active,
                    k.recorded,
                    k.offline,
                    k.audit,
                    k.events,
                    k.rollout,
                    k.generation,
                    k.offline_forced,
                    k.default_seed,
                ],
                args=[
                    system,
                    source,
                    f"{time.time():.3f}",
                    AUDIT_MAXLEN,
                    expect or "",
                    reason,
                    "1" if forced else "",
                    action,
                    *known,
                ],
            )
        except ResponseError as exc:
            if "OFFLINE" in str(exc):
                raise offline_error(system) from None
            if "EXPECT" in str(exc):
                raise expect_error(str(exc), expect or "") from None
            raise await self._failure(exc, *switched) from exc
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, *switched) from exc
        return SwitchResult(str(previous), int(generation))

    async def set_offline(
        self,
        system: str,
        offline: bool,
        source: str,
        *,
        reason: str = "",
        forced: bool = False,
        refuse_active: bool = False,
    ) -> None:
        k = self.keys
        try:
            await self._offline(
                keys=[k.offline, k.audit, k.events, k.active, k.generation, k.offline_forced],
                args=[
                    system,
                    "1" if offline else "0",
                    source,
                    f"{time.time():.3f}",
                    AUDIT_MAXLEN,
                    reason,
                    "1" if forced else "",
                    "1" if refuse_active else "",
                ],
            )
        except ResponseError as exc:
            if "ACTIVE" in str(exc):
                raise active_error(system) from None
            raise await self._failure(
                exc, k.offline, k.audit, k.active, k.generation, k.offline_forced
            ) from exc
        except (RedisError, OSError) as exc:
            raise await self._failure(
                exc, k.offline, k.audit, k.active, k.generation, k.offline_forced
            ) from exc

    async def record_observed(self, source: str, known: Sequence[str]) -> bool:
        k = self.keys
        try:
            return bool(
                await self._observe(
                    keys=[
                        k.active,
                        k.recorded,
                        k.audit,
                        k.offline,
                        k.rollout,
                        k.events,
                        k.offline_forced,
                        k.offline_refused,
                        k.default_seed,
                    ],
                    args=[source, f"{time.time():.3f}", AUDIT_MAXLEN, *known],
                )
            )
        except (RedisError, OSError) as exc:
            raise await self._failure(
                exc, k.active, k.recorded, k.audit, k.offline, k.rollout, k.offline_forced
            ) from exc

    async def write_rollout(
        self, expected: str | None, new: str | None, entry: AuditFields, *, expect_active: str = ""
    ) -> int:
        """Compare-and-set of the whole rollout document, with its audit entry; returns the
        new generation. Raises Conflict when the document changed since `expected` was read."""
        k = self.keys
        try:
            return int(
                await self._rollout(
                    keys=[k.rollout, k.audit, k.events, k.generation, k.active],
                    args=[
                        expected or "",
                        new or "",
                        f"{time.time():.3f}",
                        AUDIT_MAXLEN,
                        entry.action,
                        entry.source,
                        entry.from_,
                        entry.to,
                        entry.reason,
                        "1" if entry.forced else "",
                        expect_active,
                    ],
                )
            )
        except ResponseError as exc:
            if "CHANGED" in str(exc):
                raise Conflict("the rollout changed meanwhile; look again and retry") from None
            if "EXPECT" in str(exc):
                raise expect_error(str(exc), expect_active) from None
            raise await self._failure(exc, k.rollout, k.audit, k.generation, k.active) from exc
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, k.rollout, k.audit, k.generation, k.active) from exc

    async def add_rollout_counts(
        self, rollout_id: str, step: int, deltas: Mapping[str, tuple[int, int]]
    ) -> None:
        key = self.keys.rollout_counts(rollout_id, step)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for system, (requests, failures) in deltas.items():
                    if requests:
                        pipe.hincrby(key, f"{system}:requests", requests)
                    if failures:
                        pipe.hincrby(key, f"{system}:failures", failures)
                pipe.expire(key, ROLLOUT_COUNTS_TTL)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, key) from exc

    async def rollout_counts(self, rollout_id: str, step: int) -> dict[str, tuple[int, int]]:
        key = self.keys.rollout_counts(rollout_id, step)
        try:
            raw: dict[str, str] = await self._client.hgetall(key)  # type: ignore[assignment]
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, key) from exc
        return parse_counts(raw)

    async def hold_leader(self, instance: str, ttl: float) -> bool:
        try:
            return bool(
                await self._leader(keys=[self.keys.leader], args=[instance, int(ttl * 1000)])
            )
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.leader) from exc

    async def leader(self) -> str | None:
        try:
            value = await self._client.get(self.keys.leader)
        except ResponseError as exc:
            if is_wrong_type(exc):
                return None  # nobody holds it: the next tick's hold_leader replaces it
            raise self._unavailable(exc) from exc
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.leader) from exc
        return None if value is None else str(value)

    async def release_leader(self, instance: str) -> None:
        try:
            await self._unlead(keys=[self.keys.leader], args=[instance])
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.leader) from exc

    async def heartbeat(self, instance: str, document: Mapping[str, Any]) -> None:
        try:
            replaced = await self._heartbeat(
                keys=[self.keys.instances], args=[instance, orjson.dumps(document)]
            )
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.instances) from exc
        if replaced:
            log.warning(
                "Redis key %r held another kind of value than the instance registry (a hash); "
                "replaced it (every instance writes its entry again within a heartbeat)",
                self.keys.instances,
            )

    async def instances(self, now: float, stale_after: float) -> list[dict[str, Any]]:
        """Live instances; those silent for longer than `stale_after` are dropped here."""
        try:
            raw: dict[str, str] = await self._client.hgetall(self.keys.instances)  # type: ignore[assignment]
            live, stale = split_instances(raw, now, stale_after)
            if stale:
                await self._client.hdel(self.keys.instances, *stale)
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.instances) from exc
        return live

    async def remove_instance(self, instance: str) -> None:
        try:
            await self._client.hdel(self.keys.instances, instance)
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.instances) from exc

    async def audit(self, count: int) -> list[AuditEntry]:
        try:
            rows: list[tuple[str, dict[str, str]]] = await self._client.xrevrange(
                self.keys.audit, count=count
            )  # type: ignore[assignment]
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.audit) from exc
        return [
            AuditEntry(
                id=entry_id,
                # An entry added with redis-cli XADD may lack any field or hold anything.
                time=_float_or_none(data.get("time")) or 0.0,
                action=data.get("action", "switch"),
                source=data.get("source", ""),
                from_=data.get("from", ""),
                to=data.get("to", ""),
                reason=data.get("reason", ""),
                forced=data.get("forced", "") == "1",
            )
            for entry_id, data in rows
        ]

    async def write_affinity(self, records: Sequence[AffinityRecord], now: float) -> None:
        """All records in one script call with one JSON argument: redis-py's per-command and
        per-argument packing, not the round trip, is what a busy router pays for."""
        if not records:
            return
        k = self.keys
        batch: list[list[str | int | float]] = [
            [
                k.affinity(r.kind, r.ident),
                k.open_items(r.system) if r.counted > 0 else "",
                r.system,
                r.ttl,
                _member(r.kind, r.ident),
                now + r.counted,
            ]
            for r in records
        ]
        try:
            await self._affinity(keys=[k.open_items(records[0].system)], args=[orjson.dumps(batch)])
        except (RedisError, OSError) as exc:
            touched = dict.fromkeys(str(key) for row in batch for key in row[:2])
            raise await self._failure(exc, *touched) from exc

    async def lookup_affinity(self, kind: AffinityKind, ident: str) -> str | None:
        try:
            value = await self._client.get(self.keys.affinity(kind, ident))
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.affinity(kind, ident)) from exc
        return None if value is None else str(value)

    async def affinity_entry(self, kind: AffinityKind, ident: str) -> tuple[str, float] | None:
        """The issuer and the seconds Redis keeps it: a copy cached for longer could still
        name this issuer after Redis forgot it and another system's id took its place."""
        key = self.keys.affinity(kind, ident)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                value, pttl = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, key) from exc
        if value is None:
            return None
        return str(value), max(0.0, int(pttl) / 1000) if int(pttl) >= 0 else 0.0

    async def claim_affinity(self, record: AffinityRecord, now: float) -> str | None:
        """Record `record` unless another system holds its id; returns that system, else
        None. Atomic, so two instances claiming one id for two systems cannot both win."""
        k = self.keys
        key = k.affinity(record.kind, record.ident)
        counted = k.open_items(record.system) if record.counted > 0 else ""
        try:
            holder = await self._claim(
                keys=[key],
                args=[
                    record.system,
                    record.ttl,
                    counted,
                    _member(record.kind, record.ident),
                    now + record.counted,
                ],
            )
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, key, *([counted] if counted else [])) from exc
        return str(holder) or None

    async def release(self, kind: AffinityKind, ident: str, system: str) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.delete(self.keys.affinity(kind, ident))
                pipe.zrem(self.keys.open_items(system), _member(kind, ident))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise await self._failure(
                exc, self.keys.affinity(kind, ident), self.keys.open_items(system)
            ) from exc

    async def open_counts(self, systems: Sequence[str], now: float) -> dict[str, int]:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for system in systems:
                    pipe.zremrangebyscore(self.keys.open_items(system), "-inf", now)
                    pipe.zcard(self.keys.open_items(system))
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, *(self.keys.open_items(s) for s in systems)) from exc
        return {system: int(results[2 * i + 1]) for i, system in enumerate(systems)}

    async def mark_preview(self, system: str, ttl: int) -> None:
        try:
            await self._client.set(self.keys.preview(system), "1", ex=ttl)
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.preview(system)) from exc

    async def previewing(self, systems: Sequence[str]) -> frozenset[str]:
        try:
            values = await self._client.mget([self.keys.preview(s) for s in systems])
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, *(self.keys.preview(s) for s in systems)) from exc
        return frozenset(s for s, v in zip(systems, values, strict=True) if v is not None)


class MemoryStore:
    """`memory://`: the same behaviour inside one process, for the demo and single-node trials.

    Not shared between processes, so `--workers` above 1 refuses it (serve.py).
    """

    def __init__(self) -> None:
        self.description = "memory://"
        self.active: str | None = None
        self.recorded: str | None = None
        self.offline: set[str] = set()
        self.offline_forced: str | None = None
        self.entries: list[AuditEntry] = []
        self.affinity: dict[tuple[str, str], tuple[str, float]] = {}
        self.open: dict[str, dict[str, float]] = {}
        self.preview: dict[str, float] = {}
        # One process's memory never loses its state while the process runs.
        self.epoch: str | None = "memory:0"
        self.rollout: str | None = None
        self.generation = 0
        self.counts: dict[tuple[str, int], dict[str, tuple[int, int]]] = {}
        self.leader_id: tuple[str, float] | None = None
        self.registry: dict[str, bytes] = {}
        self._changed = asyncio.Event()
        self._sequence = 0

    def _notify(self) -> None:
        # Wake every watcher, then re-arm: waiters already woken keep their wake-up.
        self._changed.set()
        self._changed = asyncio.Event()

    def _append(
        self,
        action: str,
        source: str,
        from_: str,
        to: str,
        reason: str = "",
        forced: bool = False,
    ) -> None:
        self._sequence += 1
        now = time.time()
        entry = AuditEntry(
            f"{int(now * 1000)}-{self._sequence}", now, action, source, from_, to, reason, forced
        )
        self.entries.append(entry)
        del self.entries[:-AUDIT_MAXLEN]

    def _end_rollout(self, state: str, why: str, kept: str = "") -> dict[str, Any] | None:
        """What the scripts' end_rollout does: end a running or paused rollout in place."""
        if self.rollout is None:
            return None
        doc = orjson.loads(self.rollout)
        if doc.get("state") not in ("running", "paused") or (kept and doc.get("source") == kept):
            return None
        doc.update(state=state, ended_at=time.time(), end_reason=why)
        self.rollout = orjson.dumps(doc).decode()
        return dict(doc)

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def read_state(self) -> StoredState:
        return StoredState(
            active=self.active,
            offline=frozenset(self.offline),
            recorded=self.recorded,
            epoch=self.epoch,
            rollout=self.rollout,
            generation=self.generation,
            offline_forced=self.offline_forced,
        )

    async def mark_restoring(self, now: float) -> None:
        return None  # memory:// never loses its state while the process runs

    async def persistence(self) -> str:
        return "memory"  # lives and dies with the process: nothing to restart empty

    async def changes(self, tick: float) -> AsyncIterator[Change]:
        # Armed before "subscribed", and re-armed before each "event" is handed out: a write
        # made while the consumer handles the previous change (or before it waits again) sets
        # the event it waits on next, as a Redis subscription queues it. Never missed.
        event = self._changed
        yield "subscribed"
        while True:
            try:
                await asyncio.wait_for(event.wait(), timeout=tick)
            except TimeoutError:
                yield "tick"
            else:
                event = self._changed
                yield "event"

    async def seed_active(self, system: str) -> bool:
        if self.active is not None:
            return False
        self.active = system
        self._notify()
        return True

    async def restore(
        self,
        epoch: str,
        active: str,
        offline: Sequence[str],
        *,
        known: bool = False,
        rollout: RolloutRestore | None = None,
    ) -> tuple[str, bool]:
        if rollout is not None and self.rollout is None:
            self.rollout = rollout.document
            self._append(
                "rollout-restore", rollout.source, rollout.from_, rollout.to, rollout.reason
            )
        created = self.epoch is None
        if created:
            self.epoch = epoch
            self.offline.update(offline)
        seeded = bool(active) and self.active is None
        if seeded:
            self.active = active
            self._notify()
        assert self.epoch is not None
        return self.epoch, seeded

    def set_active_raw(self, value: str) -> None:
        """What a bare `redis-cli SET` is for Redis: a write that bypasses the audit."""
        self.active = value
        self._notify()

    async def switch(self, system: str, source: str, known: Sequence[str]) -> str:
        return (await self.change_active(system, source, known)).previous

    async def change_active(
        self,
        system: str,
        source: str,
        known: Sequence[str],
        *,
        expect: str | None = None,
        reason: str = "",
        forced: bool = False,
        action: str = "switch",
    ) -> SwitchResult:
        if expect and self.active != expect:
            raise expect_error(f"EXPECT {self.active or ''}", expect)
        if system in self.offline:
            if not forced:
                raise offline_error(system)
            self.offline.discard(system)
            if self.offline_forced == system:
                self.offline_forced = None
            self._append("online", source, system, system, f"forced {action} to it", True)
        if (
            self.active is not None
            and self.active != self.recorded
            and self.active in known
            and self.active not in self.offline
        ):
            self._append("switch", "external", self.recorded or "", self.active)
            self.recorded = self.active
        previous = self.recorded or ""
        self.active = system
        if action == "promote":
            self._end_rollout("promoted", reason)
        else:
            ended = self._end_rollout("ended", f"{action} to {system} by {source}")
            if ended is not None:
                self._append(
                    "rollout-end",
                    source,
                    str(ended.get("source", "")),
                    str(ended.get("target", "")),
                    f"ended by a {action} to {system}",
                )
        if previous != system or action == "promote":
            self._append(action, source, previous, system, reason, forced)
        self.recorded = system
        self.generation += 1
        self._notify()
        return SwitchResult(previous, self.generation)

    async def set_offline(
        self,
        system: str,
        offline: bool,
        source: str,
        *,
        reason: str = "",
        forced: bool = False,
        refuse_active: bool = False,
    ) -> None:
        if offline and refuse_active and self.active == system:
            raise active_error(system)
        changed = (system not in self.offline) if offline else (system in self.offline)
        if offline and self.active == system:
            self.offline_forced = system
        elif not offline and self.offline_forced == system:
            self.offline_forced = None
        if offline:
            self.offline.add(system)
        else:
            self.offline.discard(system)
        if changed:
            self._append("offline" if offline else "online", source, system, system, reason, forced)
        self.generation += 1
        self._notify()

    async def record_observed(self, source: str, known: Sequence[str]) -> bool:
        if (
            self.active is None
            or self.active == self.recorded
            or self.active not in known
            or self.active in self.offline
        ):
            return False
        self._append("switch", source, self.recorded or "", self.active)
        self.recorded = self.active
        why = f"active set to {self.active} outside token-router (bare SET)"
        ended = self._end_rollout("ended", why, kept=self.active)
        if ended is not None:
            self._append("rollout-end", source, str(ended["source"]), str(ended["target"]), why)
            self._notify()
        return True

    async def write_rollout(
        self, expected: str | None, new: str | None, entry: AuditFields, *, expect_active: str = ""
    ) -> int:
        if (self.rollout or "") != (expected or ""):
            raise Conflict("the rollout changed meanwhile; look again and retry")
        if expect_active and self.active != expect_active:
            raise expect_error(f"EXPECT {self.active or ''}", expect_active)
        self.rollout = new or None
        self._append(entry.action, entry.source, entry.from_, entry.to, entry.reason, entry.forced)
        self.generation += 1
        self._notify()
        return self.generation

    async def add_rollout_counts(
        self, rollout_id: str, step: int, deltas: Mapping[str, tuple[int, int]]
    ) -> None:
        counts = self.counts.setdefault((rollout_id, step), {})
        for system, (requests, failures) in deltas.items():
            old = counts.get(system, (0, 0))
            counts[system] = (old[0] + requests, old[1] + failures)

    async def rollout_counts(self, rollout_id: str, step: int) -> dict[str, tuple[int, int]]:
        return dict(self.counts.get((rollout_id, step), {}))

    async def hold_leader(self, instance: str, ttl: float) -> bool:
        now = time.monotonic()
        if self.leader_id is None or self.leader_id[1] <= now or self.leader_id[0] == instance:
            self.leader_id = (instance, now + ttl)
            return True
        return False

    async def leader(self) -> str | None:
        if self.leader_id is None or self.leader_id[1] <= time.monotonic():
            return None
        return self.leader_id[0]

    async def release_leader(self, instance: str) -> None:
        if self.leader_id is not None and self.leader_id[0] == instance:
            self.leader_id = None

    async def heartbeat(self, instance: str, document: Mapping[str, Any]) -> None:
        self.registry[instance] = orjson.dumps(document)

    async def instances(self, now: float, stale_after: float) -> list[dict[str, Any]]:
        live, stale = split_instances(self.registry, now, stale_after)
        for ident in stale:
            self.registry.pop(ident, None)
        return live

    async def remove_instance(self, instance: str) -> None:
        self.registry.pop(instance, None)

    async def audit(self, count: int) -> list[AuditEntry]:
        return list(reversed(self.entries[-count:]))

    async def write_affinity(self, records: Sequence[AffinityRecord], now: float) -> None:
        for r in records:
            held = self.affinity.get((r.kind, r.ident))
            if held is not None and held[0] != r.system and held[1] > time.time():
                continue  # the first issuer keeps its id (RedisStore._AFFINITY)
            self.affinity[(r.kind, r.ident)] = (r.system, now + r.ttl)
            if r.counted > 0:
                self.open.setdefault(r.system, {})[_member(r.kind, r.ident)] = now + r.counted

    async def lookup_affinity(self, kind: AffinityKind, ident: str) -> str | None:
        found = self.affinity.get((kind, ident))
        if found is None or found[1] <= time.time():
            return None
        return found[0]

    async def affinity_entry(self, kind: AffinityKind, ident: str) -> tuple[str, float] | None:
        found = self.affinity.get((kind, ident))
        left = 0.0 if found is None else found[1] - time.time()
        return None if found is None or left <= 0 else (found[0], left)

    async def claim_affinity(self, record: AffinityRecord, now: float) -> str | None:
        held = await self.affinity_entry(record.kind, record.ident)
        if held is not None and held[0] != record.system:
            return held[0]
        await self.write_affinity([record], now)
        return None

    async def release(self, kind: AffinityKind, ident: str, system: str) -> None:
        self.affinity.pop((kind, ident), None)
        self.open.get(system, {}).pop(_member(kind, ident), None)

    async def open_counts(self, systems: Sequence[str], now: float) -> dict[str, int]:
        counts = {}
        for system in systems:
            items = self.open.get(system, {})
            for member in [m for m, expiry in items.items() if expiry <= now]:
                del items[member]
            counts[system] = len(items)
        return counts

    async def mark_preview(self, system: str, ttl: int) -> None:
        self.preview[system] = time.time() + ttl

    async def previewing(self, systems: Sequence[str]) -> frozenset[str]:
        now = time.time()
        return frozenset(s for s in systems if self.preview.get(s, 0.0) > now)


def open_store(
    url: str | SentinelTarget, keys: Keys, *, timeout: float, keyspace_events: bool
) -> StateStore:
    if isinstance(url, str) and url.startswith("memory://"):
        return MemoryStore()
    return RedisStore(url, keys, timeout=timeout, keyspace_events=keyspace_events)
