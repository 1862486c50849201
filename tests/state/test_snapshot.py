"""router/state/snapshot.py: snapshots, the holder, backoff, the watcher on memory:// and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

import pytest

from router.errors import StoreUnavailable
from router.state.keys import Keys
from router.state.memory_store import MemoryStore
from router.state.redis_store import RedisStore
from router.state.snapshot import (
    REFUSED_OFFLINE_MARK,
    Backoff,
    Refusal,
    Snapshot,
    StateHolder,
    StateWatcher,
    build_snapshot,
)
from router.state.store import StateStore, StoredState
from tests.helpers import REDIS_TIMEOUT, RedisServer, switch, wait_until

KNOWN = ("a", "b")
KEYS = Keys("tokenrouter")

# --- build_snapshot -------------------------------------------------------------------------


def stored(active: str | None, offline: Sequence[str] = ()) -> StoredState:
    return StoredState(active=active, offline=frozenset(offline))


def test_snapshot_takes_known_value() -> None:
    previous = Snapshot(active="a")
    assert build_snapshot(stored("b"), KNOWN, previous, 10.0) == Snapshot(active="b")


def test_snapshot_refuses_unknown_value() -> None:
    previous = Snapshot(active="b")
    snapshot = build_snapshot(stored("zzz"), KNOWN, previous, 10.0)
    assert snapshot.active == "b"
    assert snapshot.refused == Refusal(value="zzz", since=10.0)


def test_snapshot_refuses_a_change_to_an_offline_system() -> None:
    # SPEC section 6: a bare SET to an offline system is refused like an unknown value.
    snapshot = build_snapshot(stored("b", offline=["b"]), KNOWN, Snapshot(active="a"), 10.0)
    assert snapshot.active == "a"
    assert snapshot.refused == Refusal("b", 10.0, reason="offline")
    assert "offline" in snapshot.refused.describe()
    # Brought online, the key's value is routable: routing follows it.
    assert build_snapshot(stored("b"), KNOWN, snapshot, 11.0) == Snapshot(active="b")


def test_offlining_the_active_system_is_not_a_refusal() -> None:
    # Through token-router (`offline a --force`), which marks it as forced.
    forced = replace(stored("a", offline=["a"]), offline_forced="a")
    snapshot = build_snapshot(forced, KNOWN, Snapshot(active="a"), 10.0)
    assert snapshot == Snapshot(active="a", offline=frozenset({"a"}))


def test_a_bare_sadd_of_the_active_system_is_refused() -> None:
    """Issue 25 item 6: the same gate as a bare SET of an offline system; the active system
    stays active and online, and the refusal is shown (its time kept while it lasts)."""
    bare = stored("a", offline=["a", "b"])
    snapshot = build_snapshot(bare, KNOWN, Snapshot(active="a"), 10.0)
    assert snapshot == Snapshot(
        active="a",
        offline=frozenset({"b"}),
        refused=Refusal("a", 10.0, reason=REFUSED_OFFLINE_MARK),
    )
    assert "outside token-router" in snapshot.refused.describe()  # type: ignore[union-attr]
    assert build_snapshot(bare, KNOWN, snapshot, 11.0) == snapshot
    # Removed again: nothing refused; unreadable marker: the set as it stands.
    assert build_snapshot(stored("a"), KNOWN, snapshot, 12.0) == Snapshot(active="a")
    unknown = replace(bare, unreadable=frozenset({"offline_forced"}))
    assert build_snapshot(unknown, KNOWN, Snapshot(active="a"), 13.0).refused is None


def test_refusal_since_kept_for_same_value() -> None:
    first = build_snapshot(stored("zzz"), KNOWN, Snapshot(active="a"), 10.0)
    again = build_snapshot(stored("zzz"), KNOWN, first, 25.0)
    assert again.refused == Refusal("zzz", 10.0)
    assert again == first  # unchanged: the watcher drops it, listeners are not called


def test_refusal_since_renewed_for_other_value() -> None:
    first = build_snapshot(stored("zzz"), KNOWN, Snapshot(active="a"), 10.0)
    other = build_snapshot(stored("yyy"), KNOWN, first, 25.0)
    assert other.refused == Refusal("yyy", 25.0)
    assert other.active == "a"


def test_valid_value_clears_refusal() -> None:
    refused = build_snapshot(stored("zzz"), KNOWN, Snapshot(active="a"), 10.0)
    assert build_snapshot(stored("b"), KNOWN, refused, 11.0) == Snapshot(active="b")


def test_missing_value_keeps_previous_active() -> None:
    previous = Snapshot(active="b", offline=frozenset({"a"}), refused=Refusal("zzz", 1.0))
    snapshot = build_snapshot(stored(None), KNOWN, previous, 10.0)
    assert snapshot == Snapshot(active="b", offline=frozenset(), refused=None)


def test_offline_filtered_to_known_systems() -> None:
    snapshot = build_snapshot(stored("a", ["b", "ghost"]), KNOWN, Snapshot(active="a"), 1.0)
    assert snapshot.offline == frozenset({"b"})
    assert snapshot.is_offline("b") and not snapshot.is_offline("a")
    assert not snapshot.is_offline("ghost")


def test_empty_string_value_is_refused() -> None:
    snapshot = build_snapshot(stored(""), KNOWN, Snapshot(active="a"), 3.0)
    assert snapshot.active == "a"
    assert snapshot.refused == Refusal("", 3.0)


# --- StateHolder ----------------------------------------------------------------------------


def test_apply_swaps_and_tells_listeners() -> None:
    holder = StateHolder(current=Snapshot(active="a"))
    seen: list[tuple[Snapshot, Snapshot]] = []
    holder.listeners.append(lambda old, new: seen.append((old, new)))
    assert holder.apply(Snapshot(active="b")) is True
    assert holder.current == Snapshot(active="b")
    assert seen == [(Snapshot(active="a"), Snapshot(active="b"))]
    assert holder.apply(Snapshot(active="b")) is False  # equal: dropped, nobody told
    assert len(seen) == 1


def test_broken_listener_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    holder = StateHolder(current=Snapshot(active="a"))
    seen: list[str] = []

    def broken(old: Snapshot, new: Snapshot) -> None:
        raise RuntimeError("listener bug")

    holder.listeners.append(broken)
    holder.listeners.append(lambda old, new: seen.append(new.active))
    with caplog.at_level(logging.ERROR, logger="router.state"):
        assert holder.apply(Snapshot(active="b")) is True
    assert seen == ["b"]
    assert holder.current.active == "b"
    assert "listener" in caplog.text


def test_set_degraded_tells_health_listeners_on_change_only() -> None:
    holder = StateHolder(current=Snapshot(active="a"))
    seen: list[bool] = []
    holder.health_listeners.append(seen.append)
    holder.set_degraded(True, "Redis away")
    since = holder.degraded_since
    assert holder.degraded and holder.last_error == "Redis away" and since is not None
    holder.set_degraded(True, "still away")
    assert holder.degraded_since == since
    assert holder.last_error == "still away"
    holder.set_degraded(False)
    assert not holder.degraded and holder.degraded_since is None and holder.last_error == ""
    assert seen == [True, False]


# --- Backoff --------------------------------------------------------------------------------


def test_backoff_doubles_up_to_cap_and_resets() -> None:
    backoff = Backoff(cap=0.3)
    assert [backoff.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.next() == 0.05


def test_backoff_custom_initial() -> None:
    backoff = Backoff(cap=1.0, initial=0.4)
    assert [backoff.next() for _ in range(3)] == [0.4, 0.8, 1.0]


# --- StateWatcher ---------------------------------------------------------------------------


@dataclass
class Watching:
    store: StateStore
    holder: StateHolder
    watcher: StateWatcher
    task: asyncio.Task[None]
    changes: list[tuple[str, str]] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


@dataclass
class Watchers:
    started: list[Watching] = field(default_factory=list)
    stores: list[StateStore] = field(default_factory=list)

    def redis(self, server: RedisServer, *, keyspace_events: bool = True) -> RedisStore:
        store = RedisStore(server.url, KEYS, timeout=REDIS_TIMEOUT, keyspace_events=keyspace_events)
        self.stores.append(store)
        return store

    def __call__(
        self,
        store: StateStore,
        *,
        active: str = "a",
        instance: str = "test-1",
        resync_interval: float = 0.2,
    ) -> Watching:
        holder = StateHolder(current=Snapshot(active=active))
        watcher = StateWatcher(
            store,
            holder,
            KNOWN,
            instance=instance,
            resync_interval=resync_interval,
            retry_max=0.2,
        )
        task = asyncio.create_task(watcher.run())
        watching = Watching(store, holder, watcher, task)
        holder.listeners.append(
            lambda old, new: (
                watching.changes.append((old.active, new.active))
                if old.active != new.active
                else None
            )
        )
        watcher.recovered.append(lambda: watching.recovered.append("recovered"))
        self.started.append(watching)
        return watching

    async def close(self) -> None:
        for watching in self.started:
            watching.task.cancel()
        for watching in self.started:
            with contextlib.suppress(asyncio.CancelledError):
                await watching.task
        for store in self.stores:
            await store.close()


@pytest.fixture
async def watchers() -> AsyncIterator[Watchers]:
    factory = Watchers()
    try:
        yield factory
    finally:
        await factory.close()


def same(current: Snapshot, expected: Snapshot) -> bool:
    """Equal but for the generation (a counter of writes the tests do not count)."""
    return replace(current, generation=0) == expected


def bulk(reply: str) -> str | None:
    """The value of a raw RESP bulk-string reply (`$1\\r\\nb`), None for a nil reply."""
    return None if reply == "$-1" else reply.split("\r\n", 1)[1]


async def synced(w: Watching) -> None:
    """Until the first read is applied and audited: a change made before its audit is
    written would be recorded in its place (the audit records what it finds)."""
    await wait_until(lambda: w.holder.synced and not w.watcher.audit_pending, timeout=10)


async def audited(*instances: Watching) -> None:
    """Until every change the instances applied is in the audit (written after routing moved)."""
    await wait_until(lambda: not any(w.watcher.audit_pending for w in instances), timeout=10)


# memory://


async def test_memory_watcher_seeds_empty_store(watchers: Watchers) -> None:
    store = MemoryStore()
    w = watchers(store, active="b")
    await synced(w)
    assert store.active == "b"
    assert same(w.holder.current, Snapshot(active="b"))
    await audited(w)
    [entry] = await store.audit(10)
    assert (entry.action, entry.from_, entry.to) == ("switch", "", "b")
    assert entry.source.startswith("seed")
    assert "test-1" in entry.source


async def test_memory_watcher_follows_bare_set(watchers: Watchers) -> None:
    store = MemoryStore()
    await switch(store, "a", "test", KNOWN)
    w = watchers(store)
    await synced(w)
    store.set_active_raw("b")
    await wait_until(lambda: w.holder.current.active == "b", timeout=10)
    assert w.changes == [("a", "b")]
    await audited(w)
    entries = await store.audit(10)
    assert [(e.from_, e.to) for e in entries] == [("a", "b"), ("", "a")]
    assert entries[0].source == "external (seen by test-1)"


async def test_memory_watcher_refuses_unknown_value(
    watchers: Watchers, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    await switch(store, "b", "test", KNOWN)
    w = watchers(store)
    await wait_until(lambda: w.holder.current.active == "b", timeout=10)
    with caplog.at_level(logging.ERROR, logger="router.state"):
        store.set_active_raw("zzz")
        await wait_until(lambda: w.holder.current.refused is not None, timeout=10)
    refused = w.holder.current.refused
    assert refused is not None and refused.value == "zzz"
    assert w.holder.current.active == "b"
    assert "zzz" in caplog.text
    await audited(w)
    assert len(await store.audit(10)) == 1  # a refused value is never recorded as a switch
    store.set_active_raw("a")
    await wait_until(lambda: same(w.holder.current, Snapshot(active="a")), timeout=10)


async def test_memory_watcher_follows_switch_and_offline(watchers: Watchers) -> None:
    store = MemoryStore()
    w = watchers(store)
    await synced(w)
    await switch(store, "b", "api", KNOWN)
    await wait_until(lambda: w.holder.current.active == "b", timeout=10)
    await store.set_offline("a", True, "api")
    await wait_until(lambda: w.holder.current.is_offline("a"), timeout=10)
    await store.set_offline("a", False, "api")
    await wait_until(lambda: not w.holder.current.offline, timeout=10)
    assert same(w.holder.current, Snapshot(active="b"))


async def test_memory_bare_set_seen_by_three_instances_recorded_once(watchers: Watchers) -> None:
    store = MemoryStore()
    await switch(store, "a", "test", KNOWN)
    instances = [watchers(store, instance=f"inst-{i}") for i in range(3)]
    for w in instances:
        await synced(w)
    store.set_active_raw("b")
    await wait_until(lambda: all(w.holder.current.active == "b" for w in instances), timeout=10)
    # Every instance has re-read since; still one record of the bare SET.
    for w in instances:
        await w.watcher.sync()
    await audited(*instances)
    entries = await store.audit(10)
    assert [(e.from_, e.to) for e in entries] == [("a", "b"), ("", "a")]


# Redis


async def test_redis_watcher_follows_raw_set_on_three_instances(
    redis_server: RedisServer, watchers: Watchers
) -> None:
    instances = [
        watchers(watchers.redis(redis_server), instance=f"inst-{i}", resync_interval=5.0)
        for i in range(3)
    ]
    for w in instances:
        await synced(w)
    assert bulk(redis_server.command("GET", "tokenrouter:active")) == "a"
    assert redis_server.command("SET", "tokenrouter:active", "b") == "+OK"
    # resync_interval is 5 s: keyspace notifications carry this, not the tick.
    await wait_until(lambda: all(w.holder.current.active == "b" for w in instances), timeout=10)
    await audited(*instances)
    entries = await instances[0].store.audit(10)
    switches = [(e.from_, e.to) for e in entries]
    assert switches.count(("a", "b")) == 1
    assert entries[0].source.startswith("external (seen by inst-")


async def test_redis_watcher_tick_without_keyspace_events(
    redis_server: RedisServer, watchers: Watchers
) -> None:
    w = watchers(watchers.redis(redis_server, keyspace_events=False), resync_interval=0.1)
    await synced(w)
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: w.holder.current.active == "b", timeout=10)


async def test_redis_watcher_refuses_unknown_value(
    redis_server: RedisServer, watchers: Watchers
) -> None:
    w = watchers(watchers.redis(redis_server), resync_interval=5.0)
    await synced(w)
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: w.holder.current.active == "b", timeout=10)
    redis_server.command("SET", "tokenrouter:active", "nonsense")
    await wait_until(lambda: w.holder.current.refused is not None, timeout=10)
    assert w.holder.current.active == "b"
    refused = w.holder.current.refused
    assert refused is not None and refused.value == "nonsense"
    # The refused value stays in Redis for the operator to see and fix; routing does not move.
    assert bulk(redis_server.command("GET", "tokenrouter:active")) == "nonsense"
    redis_server.command("SET", "tokenrouter:active", "a")
    await wait_until(lambda: same(w.holder.current, Snapshot(active="a")), timeout=10)


async def test_redis_watcher_follows_offline_set(
    redis_server: RedisServer, watchers: Watchers
) -> None:
    w = watchers(watchers.redis(redis_server), resync_interval=5.0)
    await synced(w)
    redis_server.command("SADD", "tokenrouter:offline", "b")
    await wait_until(lambda: w.holder.current.is_offline("b"), timeout=10)


async def test_redis_down_fail_static_then_recovers_and_reseeds(
    redis_server: RedisServer, watchers: Watchers
) -> None:
    w = watchers(watchers.redis(redis_server))
    await synced(w)
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: w.holder.current.active == "b", timeout=10)
    before = w.holder.current

    redis_server.stop()
    await wait_until(lambda: w.holder.degraded, timeout=10)
    assert w.holder.current is before  # fail-static: routing unchanged
    assert "unavailable" in w.holder.last_error
    await w.watcher.nudge()  # a write-side nudge while Redis is away must not raise
    assert w.holder.current is before

    redis_server.start()  # comes back empty: no persistence
    await wait_until(lambda: not w.holder.degraded, timeout=15)
    assert w.recovered == ["recovered"]
    assert w.holder.current.active == "b"
    assert bulk(redis_server.command("GET", "tokenrouter:active")) == "b"
    await audited(w)
    [entry] = await w.store.audit(10)
    assert entry.to == "b" and entry.source.startswith("seed")
    # And it follows changes again; the next switch is audited from the re-seeded value.
    redis_server.command("SET", "tokenrouter:active", "a")
    await wait_until(lambda: w.holder.current.active == "a", timeout=10)
    await audited(w)
    latest = (await w.store.audit(1))[0]
    assert (latest.from_, latest.to) == ("b", "a")
    assert latest.source.startswith("external")


async def test_redis_down_at_start_keeps_default(
    redis_server: RedisServer, watchers: Watchers
) -> None:
    redis_server.stop()
    w = watchers(watchers.redis(redis_server), active="b")
    await wait_until(lambda: w.holder.degraded, timeout=10)
    assert not w.holder.synced
    assert same(w.holder.current, Snapshot(active="b"))
    redis_server.start()
    await wait_until(lambda: w.holder.synced and not w.holder.degraded, timeout=15)
    assert bulk(redis_server.command("GET", "tokenrouter:active")) == "b"


async def test_redis_flushall_reseeds(redis_server: RedisServer, watchers: Watchers) -> None:
    w = watchers(watchers.redis(redis_server), resync_interval=0.1)
    await synced(w)
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: w.holder.current.active == "b", timeout=10)
    redis_server.command("FLUSHALL")
    await wait_until(
        lambda: bulk(redis_server.command("GET", "tokenrouter:active")) == "b", timeout=10
    )
    assert w.holder.current.active == "b"


class CancelSwallowingStore(MemoryStore):
    """memory:// whose read_state loses one cancel, as Python 3.11's `asyncio.wait_for`
    inside redis-py does when a cancel lands just as the command completes."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.swallow = False

    async def read_state(self) -> StoredState:
        if self.swallow:
            self.swallow = False
            self.entered.set()
            with contextlib.suppress(asyncio.CancelledError):  # lost, like the 3.11 race
                await asyncio.Event().wait()
        return await super().read_state()


class SlowAuditStore(MemoryStore):
    """memory:// whose audit write waits until the test lets it go (a slow Redis round trip),
    and fails `fail` times first (Redis gone just for the audit)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.go = asyncio.Event()
        self.fail = 0

    async def record_observed(self, source: str, known: Sequence[str]) -> bool:
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("memory:// audit write failed (test)")
        self.entered.set()
        await self.go.wait()
        return await super().record_observed(source, known)


async def test_synced_is_set_with_the_snapshot_not_after_the_audit(watchers: Watchers) -> None:
    store = SlowAuditStore()
    w = watchers(store, active="b")
    await asyncio.wait_for(store.entered.wait(), timeout=10)
    # Routing already follows the store while the audit write is under way: /readyz must say
    # so too (it reads `synced`), or it answers "starting" while traffic moves.
    assert w.holder.synced
    assert w.holder.current == Snapshot(active="b")
    assert w.watcher.audit_pending
    store.go.set()
    await wait_until(lambda: not w.watcher.audit_pending, timeout=10)
    [entry] = await store.audit(10)
    assert entry.to == "b" and entry.source.startswith("seed")


async def test_an_audit_write_that_fails_is_retried_on_the_next_sync(watchers: Watchers) -> None:
    store = SlowAuditStore()
    store.go.set()
    await switch(store, "a", "test", KNOWN)
    w = watchers(store)
    await synced(w)
    await wait_until(lambda: not w.watcher.audit_pending, timeout=10)
    store.fail = 1
    store.set_active_raw("b")
    await wait_until(lambda: w.holder.current.active == "b", timeout=10)
    await wait_until(lambda: not w.watcher.audit_pending, timeout=10)
    entries = await store.audit(10)
    assert [(e.from_, e.to) for e in entries] == [("a", "b"), ("", "a")]
    assert entries[0].source == "external (seen by test-1)"


async def test_watcher_stops_even_when_a_cancel_is_swallowed(watchers: Watchers) -> None:
    store = CancelSwallowingStore()
    w = watchers(store, resync_interval=0.01)
    await synced(w)
    store.swallow = True
    await store.entered.wait()
    w.task.cancel()
    done, _ = await asyncio.wait([w.task], timeout=10)
    assert done, "the watcher kept running after its cancellation was swallowed"
    assert w.task.cancelled()
