"""The shared store on Redis (one server, or Sentinel through redis-py) for all instances.

Reads are pipelines; every write that must be atomic is one of the scripts of scripts.py, and
a refused one is read once by refusals.refusal. A key of the wrong type is named with its fix
(key_problems.py); any other failure is `StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
from redis.exceptions import RedisError, ResponseError

from router.errors import StoreUnavailable
from router.state import scripts
from router.state.key_problems import diagnose, is_wrong_type, parse_counter, read_each
from router.state.keys import Keys
from router.state.open_items import affinity_row, issued_args, read_open_items
from router.state.redis_client import close_client, describe, redis_client, unavailable
from router.state.redis_events import watch_changes
from router.state.refusals import WATCH_CHANGED, refusal
from router.state.sentinel import SentinelTarget
from router.state.store import (
    AUDIT_MAXLEN,
    AffinityKind,
    AffinityRecord,
    AuditEntry,
    AuditFields,
    Change,
    OpenItem,
    RolloutRestore,
    StoredState,
    SwitchResult,
    decode_state,
    member,
    parse_counts,
    persistence_mode,
    split_instances,
    state_fields,
)

log = logging.getLogger("router.store")

# Seconds a fresh router's default seed can be replaced by a router that knew the state:
# longer than any reconnect backoff (redis_retry_max), short enough to never surprise.
DEFAULT_MARK_TTL = 60

# Seconds the "restoring" mark lives: far longer than any write-back, short enough to vanish.
RESTORING_TTL = 60


ROLLOUT_COUNTS_TTL = 86_400  # a step's counts outlive any sane interval, then go


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
        self._switch = self._client.register_script(scripts.SWITCH)
        self._observe = self._client.register_script(scripts.OBSERVE)
        self._offline = self._client.register_script(scripts.OFFLINE)
        self._observe_offline = self._client.register_script(scripts.OBSERVE_OFFLINE)
        self._affinity = self._client.register_script(scripts.AFFINITY)
        self._claim = self._client.register_script(scripts.CLAIM)
        self._restore = self._client.register_script(scripts.RESTORE)
        self._rollout = self._client.register_script(scripts.ROLLOUT)
        self._leader = self._client.register_script(scripts.LEADER)
        self._watch = self._client.register_script(scripts.WATCH)
        self._unlead = self._client.register_script(scripts.UNLEAD)
        self._heartbeat = self._client.register_script(scripts.HEARTBEAT)

    @property
    def client(self) -> Any:  # for store-backed helpers: state/shared_throttle.py
        return self._client

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

    @contextlib.asynccontextmanager
    async def _failing(self, *touched: str) -> AsyncIterator[None]:
        """A failed command on `touched` keys raises the store's error for it (_failure)."""
        try:
            yield
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, *touched) from exc

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
        fields = state_fields(self.keys)
        async with self._failing(*fields.values()):
            values, wrong = await read_each(self._client, self.keys, fields, essential="active")
        return decode_state(self.keys, values, wrong)

    async def persistence(self) -> str:
        """How the server persists its data (store.persistence_mode); never raises."""
        try:
            found = await self._client.config_get("appendonly")
            saves = await self._client.config_get("save")
        except (RedisError, OSError):
            return persistence_mode(None, None)
        return persistence_mode(found.get("appendonly"), saves.get("save"))

    async def mark_restoring(self, now: float) -> None:
        async with self._failing(self.keys.restoring):
            await self._client.set(self.keys.restoring, f"{now:.3f}", ex=RESTORING_TTL)

    async def changes(self, tick: float) -> AsyncIterator[Change]:
        """Yield "subscribed" once listening, then "event" on any change, "tick" otherwise."""
        changes = watch_changes(self._client, self.keys, self._db, tick, self.keyspace_events, self)
        try:
            async for change in changes:
                yield change
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        finally:
            await changes.aclose()  # its own finally closes the subscription, now

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
        (see scripts.RESTORE). `known`: `active` is this router's last known state, not a
        default."""
        k = self.keys
        back = rollout or RolloutRestore("", "", "", "", "")
        touched = scripts.restore_keys(k)
        mode = "known" if known else "fresh"
        entry = [back.source, back.from_, back.to, back.reason]
        when = f"{time.time():.3f}"
        args: list[str | int] = [epoch, active, mode, DEFAULT_MARK_TTL, back.document, when]
        args += [AUDIT_MAXLEN, *entry]
        try:
            found, seeded = await self._restore(keys=touched, args=[*args, *offline])
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, *touched) from exc
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
        switched = scripts.switch_keys(k)
        try:
            previous, generation = await self._switch(
                keys=switched,
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
            if refused := refusal(str(exc), system=system, expected=expect or ""):
                raise refused from None
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
        touched = scripts.offline_keys(self.keys)
        try:
            await self._offline(
                keys=touched,
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
            if refused := refusal(str(exc), system=system):
                raise refused from None
            raise await self._failure(exc, *touched) from exc
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, *touched) from exc

    async def record_observed(self, source: str, known: Sequence[str]) -> bool:
        touched = scripts.observe_keys(self.keys)
        args: list[str | int] = [source, f"{time.time():.3f}", AUDIT_MAXLEN, *known]
        try:
            return bool(await self._observe(keys=touched, args=args))
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, *touched) from exc

    async def record_offline_observed(self, source: str, active: str, known: Sequence[str]) -> int:
        k = self.keys
        touched = (k.offline, k.offline_recorded, k.audit)
        args: list[str | int] = [source, f"{time.time():.3f}", AUDIT_MAXLEN, active, *known]
        async with self._failing(*touched):
            return int(await self._observe_offline(keys=list(touched), args=args))

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
            if refused := refusal(str(exc), expected=expect_active):
                raise refused from None
            raise await self._failure(exc, k.rollout, k.audit, k.generation, k.active) from exc
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, k.rollout, k.audit, k.generation, k.active) from exc

    async def add_rollout_counts(
        self, rollout_id: str, step: int, deltas: Mapping[str, tuple[int, int]]
    ) -> None:
        key = self.keys.rollout_counts(rollout_id, step)
        async with self._failing(key), self._client.pipeline(transaction=False) as pipe:
            for system, (requests, failures) in deltas.items():
                if requests:
                    pipe.hincrby(key, f"{system}:requests", requests)
                if failures:
                    pipe.hincrby(key, f"{system}:failures", failures)
            pipe.expire(key, ROLLOUT_COUNTS_TTL)
            await pipe.execute()

    async def rollout_counts(self, rollout_id: str, step: int) -> dict[str, tuple[int, int]]:
        key = self.keys.rollout_counts(rollout_id, step)
        async with self._failing(key):
            raw: dict[str, str] = await self._client.hgetall(key)  # type: ignore[assignment]
        return parse_counts(raw)

    async def add_traffic(self, slot: int, fields: Mapping[str, int], ttl: int) -> None:
        key = self.keys.traffic(slot)
        async with self._failing(key), self._client.pipeline(transaction=False) as pipe:
            for name, n in fields.items():
                pipe.hincrby(key, name, n)
            pipe.expire(key, ttl)
            await pipe.execute()

    async def read_traffic(self, slots: Sequence[int]) -> list[dict[str, int]]:
        keys = [self.keys.traffic(slot) for slot in slots]
        async with self._failing(*keys), self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            raw: list[dict[str, str]] = await pipe.execute()
        # A field written by hand that is no counter (redis-cli HSET) is no traffic.
        return [
            {name: n for name, value in found.items() if (n := parse_counter(value)) is not None}
            for found in raw
        ]

    async def read_watch(self) -> str | None:
        async with self._failing(self.keys.watch):
            value = await self._client.get(self.keys.watch)
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
            if refused := refusal(str(exc), changed=WATCH_CHANGED):
                raise refused from None
            raise await self._failure(exc, k.watch, k.audit) from exc
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, k.watch, k.audit) from exc

    async def hold_leader(self, instance: str, ttl: float) -> bool:
        async with self._failing(self.keys.leader):
            return bool(
                await self._leader(keys=[self.keys.leader], args=[instance, int(ttl * 1000)])
            )

    async def leader(self) -> str | None:
        async with self._failing(self.keys.leader):
            value = await self._client.get(self.keys.leader)
        return None if value is None else str(value)

    async def release_leader(self, instance: str) -> None:
        async with self._failing(self.keys.leader):
            await self._unlead(keys=[self.keys.leader], args=[instance])

    async def heartbeat(self, instance: str, document: Mapping[str, Any]) -> None:
        async with self._failing(self.keys.instances):
            replaced = await self._heartbeat(
                keys=[self.keys.instances], args=[instance, orjson.dumps(document)]
            )
        if replaced:  # another kind of key was there: every instance writes its entry again
            log.warning("Redis key %r was no hash; replaced it", self.keys.instances)

    async def instances(self, now: float, stale_after: float) -> list[dict[str, Any]]:
        """Live instances; those silent for longer than `stale_after` are dropped here."""
        async with self._failing(self.keys.instances):
            raw: dict[str, str] = await self._client.hgetall(self.keys.instances)  # type: ignore[assignment]
            live, stale = split_instances(raw, now, stale_after)
            if stale:
                await self._client.hdel(self.keys.instances, *stale)
        return live

    async def remove_instance(self, instance: str) -> None:
        async with self._failing(self.keys.instances):
            await self._client.hdel(self.keys.instances, instance)

    async def audit(
        self, count: int, *, before: str | None = None, since: float | None = None
    ) -> list[AuditEntry]:
        # Stream ids are `<ms>-<seq>` of the write: "(" excludes the page's last id, and the
        # lower bound is a time in milliseconds.
        newest = "+" if before is None else f"({before}"
        oldest = "-" if since is None else str(int(since * 1000))
        async with self._failing(self.keys.audit):
            rows: list[tuple[str, dict[str, str]]] = await self._client.xrevrange(
                self.keys.audit, max=newest, min=oldest, count=count
            )  # type: ignore[assignment]
        return [AuditEntry.from_fields(entry_id, data) for entry_id, data in rows]

    async def write_affinity(self, records: Sequence[AffinityRecord], now: float) -> None:
        """All records in one script call with one JSON argument: redis-py's per-command and
        per-argument packing, not the round trip, is what a busy router pays for."""
        if not records:
            return
        k = self.keys
        batch = [affinity_row(k, r, now) for r in records]
        try:
            await self._affinity(keys=[k.open_items(records[0].system)], args=[orjson.dumps(batch)])
        except (RedisError, OSError) as exc:
            touched = dict.fromkeys(str(key) for row in batch for key in row[:2])
            raise await self._failure(exc, *touched) from exc

    async def affinity_entry(self, kind: AffinityKind, ident: str) -> tuple[str, float] | None:
        """The issuer and the seconds Redis keeps it: a copy cached for longer could still
        name this issuer after Redis forgot it and another system's id took its place."""
        key = self.keys.affinity(kind, ident)
        async with self._failing(key), self._client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            value, pttl = await pipe.execute()
        if value is None:
            return None
        return str(value), max(0.0, int(pttl) / 1000) if int(pttl) >= 0 else 0.0

    async def claim_affinity(self, record: AffinityRecord, now: float) -> str | None:
        """Record `record` unless another system holds its id; returns that system, else
        None. Atomic, so two instances claiming one id for two systems cannot both win."""
        k = self.keys
        key = k.affinity(record.kind, record.ident)
        counted = k.open_items(record.system) if record.counted > 0 else ""
        async with self._failing(key, *([counted] if counted else [])):
            ident = member(record.kind, record.ident)
            args: list[str | int | float] = [record.system, record.ttl, counted, ident]
            args.append(now + record.counted)
            args.extend(issued_args(k, record))
            holder = await self._claim(keys=[key], args=args)
        return str(holder) or None

    async def release(self, kind: AffinityKind, ident: str, system: str) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.delete(self.keys.affinity(kind, ident), self.keys.issued(kind, ident))
                pipe.zrem(self.keys.open_items(system), member(kind, ident))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise await self._failure(
                exc, self.keys.affinity(kind, ident), self.keys.open_items(system)
            ) from exc

    async def open_counts(self, systems: Sequence[str], now: float) -> dict[str, int]:
        async with (
            self._failing(*(self.keys.open_items(s) for s in systems)),
            self._client.pipeline(transaction=False) as pipe,
        ):
            for system in systems:
                pipe.zremrangebyscore(self.keys.open_items(system), "-inf", now)
                pipe.zcard(self.keys.open_items(system))
            results = await pipe.execute()
        return {system: int(results[2 * i + 1]) for i, system in enumerate(systems)}

    async def open_items(self, system: str, now: float, limit: int) -> tuple[int, list[OpenItem]]:
        async with self._failing(self.keys.open_items(system)):
            return await read_open_items(self._client, self.keys, system, now, limit)

    async def mark_preview(self, system: str, ttl: int) -> None:
        async with self._failing(self.keys.preview(system)):
            await self._client.set(self.keys.preview(system), "1", ex=ttl)

    async def previewing(self, systems: Sequence[str]) -> frozenset[str]:
        async with self._failing(*(self.keys.preview(s) for s in systems)):
            values = await self._client.mget([self.keys.preview(s) for s in systems])
        return frozenset(s for s, v in zip(systems, values, strict=True) if v is not None)

    async def revoke_session(self, nonce: str, ttl: int) -> None:
        key = self.keys.revoked_session(nonce)
        async with self._failing(key):
            await self._client.set(key, "1", ex=max(1, ttl))

    async def session_revoked(self, nonce: str) -> bool:
        key = self.keys.revoked_session(nonce)
        async with self._failing(key):
            return bool(await self._client.exists(key))
