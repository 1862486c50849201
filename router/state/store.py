"""The state store: one protocol, a Redis implementation and an in-process `memory://` one.

Everything shared between router instances goes through here: the active system, the
offline set, affinity (who issued a token or short code), open-item counts for drain and
the audit stream. Every method raises `StoreUnavailable` when the store cannot answer; the
callers decide what fail-static means for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
from redis.exceptions import RedisError, ResponseError

from router.errors import Conflict, GateRefused, StoreUnavailable
from router.printable import printable
from router.state.key_types import diagnose, is_wrong_type
from router.state.keys import Keys
from router.state.redis_client import close_client, describe, redis_client, unavailable
from router.state.sentinel import SentinelTarget

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

    def __post_init__(self) -> None:
        # Anyone who can write to Redis can append to the stream: whatever it holds is made
        # safe here, once, for every surface that shows it (CLI, API, page).
        for name in ("source", "from_", "to", "reason"):
            object.__setattr__(self, name, printable(getattr(self, name)))

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
    async def restore(
        self, epoch: str, active: str, offline: Sequence[str], *, known: bool = False
    ) -> tuple[str, bool]: ...
    async def mark_restoring(self, now: float) -> None: ...
    async def persistence(self) -> str: ...
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
    async def add_traffic(self, slot: int, fields: Mapping[str, int], ttl: int) -> None: ...
    async def read_traffic(self, slots: Sequence[int]) -> list[dict[str, int]]: ...
    async def read_watch(self) -> str | None: ...
    async def write_watch(
        self, expected: str | None, new: str, entry: AuditFields | None = None
    ) -> None: ...
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
    async def revoke_session(self, nonce: str, ttl: int) -> None: ...
    async def session_revoked(self, nonce: str) -> bool: ...
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
        return None if value is None else float(value)
    except ValueError:
        return None


ROLLOUT_COUNTS_TTL = 86_400  # a step's counts outlive any sane interval, then go


def parse_counts(raw: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """`<system>:requests` / `<system>:failures` fields -> {system: (requests, failures)}."""
    out: dict[str, tuple[int, int]] = {}
    for name, value in raw.items():
        system, _, what = name.rpartition(":")
        requests, failures = out.get(system, (0, 0))
        if what == "requests":
            requests = int(value)
        elif what == "failures":
            failures = int(value)
        out[system] = (requests, failures)
    return out


def split_instances(
    raw: Mapping[str, str | bytes], now: float, stale_after: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """(live heartbeat documents sorted by id, ids of stale or unreadable ones)."""
    live: list[dict[str, Any]] = []
    stale: list[str] = []
    for ident, value in raw.items():
        try:
            doc = orjson.loads(value)
            seen = float(doc["seen"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            stale.append(ident)
            continue
        if now - seen > stale_after:
            stale.append(ident)
        else:
            live.append(doc)
    return sorted(live, key=lambda d: str(d.get("id"))), stale


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

_SWITCH = (
    _LUA_HELPERS
    + """
-- KEYS: active, recorded, offline, audit, events, rollout, generation
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

_OBSERVE = (
    _LUA_HELPERS
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

_ROLLOUT = (
    _LUA_HELPERS
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

_WATCH = (
    _LUA_HELPERS
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

_LEADER = """
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

_UNLEAD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
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

_RESTORE = """
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

_OFFLINE = (
    _LUA_HELPERS
    + """
-- KEYS: offline, audit, events, active, generation
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
        self._watch = self._client.register_script(_WATCH)
        self._unlead = self._client.register_script(_UNLEAD)

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
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(self.keys.active)
                pipe.smembers(self.keys.offline)
                pipe.get(self.keys.recorded)
                pipe.get(self.keys.epoch)
                pipe.get(self.keys.restoring)
                pipe.get(self.keys.rollout)
                pipe.get(self.keys.generation)
                (
                    active,
                    offline,
                    recorded,
                    epoch,
                    restoring,
                    rollout,
                    generation,
                ) = await pipe.execute()
        except (RedisError, OSError) as exc:
            k = self.keys
            raise await self._failure(
                exc,
                k.active,
                k.offline,
                k.recorded,
                k.epoch,
                k.restoring,
                k.rollout,
                k.generation,
            ) from exc
        return StoredState(
            active=active,
            offline=frozenset(offline),
            recorded=recorded,
            rollout=rollout,
            generation=int(generation or 0),
            epoch=epoch,
            restoring=_float_or_none(restoring),
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

    async def restore(
        self, epoch: str, active: str, offline: Sequence[str], *, known: bool = False
    ) -> tuple[str, bool]:
        """Put back the epoch, the active system and offline marks (see _RESTORE).
        `known`: `active` is this router's last known state, not a default."""
        k = self.keys
        try:
            found, seeded = await self._restore(
                keys=[k.epoch, k.active, k.offline, k.default_seed],
                args=[epoch, active, "known" if known else "fresh", DEFAULT_MARK_TTL, *offline],
            )
        except (RedisError, OSError) as exc:
            k = self.keys
            raise await self._failure(exc, k.epoch, k.active, k.offline, k.default_seed) from exc
        return str(found), bool(seeded)

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
        switched = (k.active, k.recorded, k.offline, k.audit, k.rollout, k.generation)
        try:
            previous, generation = await self._switch(
                keys=[k.active, k.recorded, k.offline, k.audit, k.events, k.rollout, k.generation],
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
                keys=[k.offline, k.audit, k.events, k.active, k.generation],
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
            raise await self._failure(exc, k.offline, k.audit, k.active, k.generation) from exc
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, k.offline, k.audit, k.active, k.generation) from exc

    async def record_observed(self, source: str, known: Sequence[str]) -> bool:
        k = self.keys
        try:
            return bool(
                await self._observe(
                    keys=[k.active, k.recorded, k.audit, k.offline, k.rollout, k.events],
                    args=[source, f"{time.time():.3f}", AUDIT_MAXLEN, *known],
                )
            )
        except (RedisError, OSError) as exc:
            raise await self._failure(
                exc, k.active, k.recorded, k.audit, k.offline, k.rollout
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

    async def add_traffic(self, slot: int, fields: Mapping[str, int], ttl: int) -> None:
        key = self.keys.traffic(slot)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for name, n in fields.items():
                    pipe.hincrby(key, name, n)
                pipe.expire(key, ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, key) from exc

    async def read_traffic(self, slots: Sequence[int]) -> list[dict[str, int]]:
        keys = [self.keys.traffic(slot) for slot in slots]
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                raw: list[dict[str, str]] = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, *keys) from exc
        return [{name: int(n) for name, n in found.items()} for found in raw]

    async def read_watch(self) -> str | None:
        try:
            value = await self._client.get(self.keys.watch)
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.watch) from exc
        return None if value is None else str(value)

    async def write_watch(
        self, expected: str | None, new: str, entry: AuditFields | None = None
    ) -> None:
        """Compare-and-set of the watch document, with its audit entry if any; Conflict when
        it changed since `expected` was read."""
        k = self.keys
        args: list[str | int] = [expected or "", new, f"{time.time():.3f}", AUDIT_MAXLEN]
        if entry is not None:
            args += [entry.action, entry.source, entry.from_, entry.to, entry.reason]
        try:
            await self._watch(keys=[k.watch, k.audit], args=args)
        except ResponseError as exc:
            if "CHANGED" in str(exc):
                raise Conflict("the watch changed meanwhile; look again") from None
            raise await self._failure(exc, k.watch, k.audit) from exc
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, k.watch, k.audit) from exc

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
            await self._client.hset(self.keys.instances, instance, orjson.dumps(document))
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.instances) from exc

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
                time=float(data.get("time", 0.0)),
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

    async def revoke_session(self, nonce: str, ttl: int) -> None:
        key = self.keys.revoked_session(nonce)
        try:
            await self._client.set(key, "1", ex=max(1, ttl))
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, key) from exc

    async def session_revoked(self, nonce: str) -> bool:
        key = self.keys.revoked_session(nonce)
        try:
            return bool(await self._client.exists(key))
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, key) from exc


class MemoryStore:
    """`memory://`: the same behaviour inside one process, for the demo and single-node trials.

    Not shared between processes, so `--workers` above 1 refuses it (serve.py).
    """

    def __init__(self) -> None:
        self.description = "memory://"
        self.active: str | None = None
        self.recorded: str | None = None
        self.offline: set[str] = set()
        self.entries: list[AuditEntry] = []
        self.affinity: dict[tuple[str, str], tuple[str, float]] = {}
        self.open: dict[str, dict[str, float]] = {}
        self.preview: dict[str, float] = {}
        self.revoked: dict[str, float] = {}  # ended login sessions: nonce -> expiry
        # One process's memory never loses its state while the process runs.
        self.epoch: str | None = "memory:0"
        self.rollout: str | None = None
        self.generation = 0
        self.counts: dict[tuple[str, int], dict[str, tuple[int, int]]] = {}
        self.leader_id: tuple[str, float] | None = None
        self.traffic: dict[int, dict[str, int]] = {}
        self.watch: str | None = None
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

    def _end_rollout(self, state: str, why: str) -> dict[str, Any] | None:
        """What the scripts' end_rollout does: end a running or paused rollout in place."""
        if self.rollout is None:
            return None
        doc = orjson.loads(self.rollout)
        if doc.get("state") not in ("running", "paused"):
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

    async def restore(
        self, epoch: str, active: str, offline: Sequence[str], *, known: bool = False
    ) -> tuple[str, bool]:
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
        ended = self._end_rollout("ended", why)
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

    async def add_traffic(self, slot: int, fields: Mapping[str, int], ttl: int) -> None:
        counts = self.traffic.setdefault(slot, {})
        for name, n in fields.items():
            counts[name] = counts.get(name, 0) + n
        for old in [s for s in self.traffic if s < slot - ttl]:
            del self.traffic[old]

    async def read_traffic(self, slots: Sequence[int]) -> list[dict[str, int]]:
        return [dict(self.traffic.get(slot, {})) for slot in slots]

    async def read_watch(self) -> str | None:
        return self.watch

    async def write_watch(
        self, expected: str | None, new: str, entry: AuditFields | None = None
    ) -> None:
        if (self.watch or "") != (expected or ""):
            raise Conflict("the watch changed meanwhile; look again")
        self.watch = new
        if entry is not None:
            self._append(entry.action, entry.source, entry.from_, entry.to, entry.reason)

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

    async def revoke_session(self, nonce: str, ttl: int) -> None:
        self.revoked[nonce] = time.time() + max(1, ttl)

    async def session_revoked(self, nonce: str) -> bool:
        return self.revoked.get(nonce, 0.0) > time.time()


def open_store(
    url: str | SentinelTarget, keys: Keys, *, timeout: float, keyspace_events: bool
) -> StateStore:
    if isinstance(url, str) and url.startswith("memory://"):
        return MemoryStore()
    return RedisStore(url, keys, timeout=timeout, keyspace_events=keyspace_events)
