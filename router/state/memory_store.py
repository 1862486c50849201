"""`memory://`: the state store inside one process, for the demo and single-node trials."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson

from router.state.refusals import (
    WATCH_CHANGED,
    active_error,
    changed_error,
    expect_error,
    offline_error,
)
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
    member,
    split_instances,
)


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
        self.issued: dict[str, tuple[str, float]] = {}  # member -> (instance, time)
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
            back = rollout
            self._append("rollout-restore", back.source, back.from_, back.to, back.reason)
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
            raise expect_error(self.active or "", expect)
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

    async def record_offline_observed(self, source: str, active: str, known: Sequence[str]) -> int:
        # Only set_offline writes the set here (no redis-cli reaches memory://), and it
        # audits its own changes: nothing is ever left to observe.
        return 0

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
            raise changed_error()
        if expect_active and self.active != expect_active:
            raise expect_error(self.active or "", expect_active)
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
            raise changed_error(WATCH_CHANGED)
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

    async def audit(
        self, count: int, *, before: str | None = None, since: float | None = None
    ) -> list[AuditEntry]:
        def position(entry_id: str) -> tuple[int, int]:
            ms, _, seq = entry_id.partition("-")
            return int(ms), int(seq or 0)

        found = [
            e
            for e in reversed(self.entries)
            if (before is None or position(e.id) < position(before))
            and (since is None or position(e.id)[0] >= int(since * 1000))
        ]
        return found[:count]

    async def write_affinity(self, records: Sequence[AffinityRecord], now: float) -> None:
        for r in records:
            held = self.affinity.get((r.kind, r.ident))
            if held is not None and held[0] != r.system and held[1] > time.time():
                continue  # the first issuer keeps its id (RedisStore._AFFINITY)
            self.affinity[(r.kind, r.ident)] = (r.system, now + r.ttl)
            if r.counted > 0:
                self.open.setdefault(r.system, {})[member(r.kind, r.ident)] = now + r.counted
                if r.issuer:
                    self.issued[member(r.kind, r.ident)] = (r.issuer, r.issued)

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
        self.open.get(system, {}).pop(member(kind, ident), None)
        self.issued.pop(member(kind, ident), None)

    async def open_items(self, system: str, now: float, limit: int) -> tuple[int, list[OpenItem]]:
        live = sorted(
            (expiry, name) for name, expiry in self.open.get(system, {}).items() if expiry > now
        )
        items = []
        for expiry, name in live[:limit]:
            kind, _, ident = name.partition(":")
            issuer, when = self.issued.get(name, ("", 0.0))
            items.append(OpenItem(kind, ident, expiry, issuer, when))  # type: ignore[arg-type]
        return len(live), items

    async def open_counts(self, systems: Sequence[str], now: float) -> dict[str, int]:
        counts = {}
        for system in systems:
            items = self.open.get(system, {})
            for expired in [m for m, expiry in items.items() if expiry <= now]:
                del items[expired]
                self.issued.pop(expired, None)
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
