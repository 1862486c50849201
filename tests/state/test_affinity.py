"""router/state/affinity.py: the local LRU, group commit of writes, fail-static records + replay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from router.state.affinity import MAX_BATCH, QUEUE_MAX, REPLAY_MAX, Affinity, LocalCache
from router.state.keys import Keys
from router.state.memory_store import MemoryStore
from router.state.redis_store import RedisStore
from router.state.snapshot import Snapshot, StateHolder
from router.state.store import AffinityRecord, StateStore
from tests.helpers import REDIS_TIMEOUT, RedisServer, issuer_of

KEYS = Keys("tokenrouter")

# --- LocalCache -----------------------------------------------------------------------------


def test_cache_get_put_pop() -> None:
    cache = LocalCache(10)
    assert cache.get("session", "s1", 0.0) is None
    cache.put("session", "s1", "a", 100.0)
    cache.put("code", "s1", "b", 100.0)  # kinds are separate
    assert cache.get("session", "s1", 50.0) == "a"
    assert cache.get("code", "s1", 50.0) == "b"
    cache.put("session", "s1", "c", 100.0)  # overwrite
    assert cache.get("session", "s1", 50.0) == "c"
    assert len(cache) == 2
    cache.pop("session", "s1")
    cache.pop("session", "never")
    assert cache.get("session", "s1", 50.0) is None
    assert len(cache) == 1


def test_cache_expiry() -> None:
    cache = LocalCache(10)
    cache.put("session", "s1", "a", 100.0)
    assert cache.get("session", "s1", 99.9) == "a"
    assert cache.get("session", "s1", 100.0) is None  # expiry is exclusive
    assert len(cache) == 0  # an expired entry is dropped when met


def test_cache_evicts_least_recently_used() -> None:
    cache = LocalCache(2)
    cache.put("session", "s1", "a", 100.0)
    cache.put("session", "s2", "a", 100.0)
    assert cache.get("session", "s1", 0.0) == "a"  # s1 is now the most recent
    cache.put("session", "s3", "b", 100.0)
    assert len(cache) == 2
    assert cache.get("session", "s2", 0.0) is None
    assert cache.get("session", "s1", 0.0) == "a"
    assert cache.get("session", "s3", 0.0) == "b"


def test_cache_put_refreshes_recency() -> None:
    cache = LocalCache(2)
    cache.put("session", "s1", "a", 100.0)
    cache.put("session", "s2", "a", 100.0)
    cache.put("session", "s1", "a", 200.0)
    cache.put("session", "s3", "a", 100.0)
    assert cache.get("session", "s2", 0.0) is None
    assert cache.get("session", "s1", 150.0) == "a"


def test_cache_entries_stay_small() -> None:
    """The cache must fit a worker's memory budget: ~120 traced bytes an entry with these
    ids (a plain dict; the OrderedDict it replaced took ~170)."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = LocalCache(10_000)
        for i in range(10_000):
            cache.put("session", f"a-{i:016x}", "a", 1.9e9)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used / 10_000 < 150
    assert cache.get("session", f"a-{9_999:016x}", 1.8e9) == "a"


def test_cache_bound_holds_under_churn() -> None:
    """However puts, hits and pops interleave, the cache never holds more than its size, and
    what it evicts is always the least recently used."""
    cache = LocalCache(1000)
    for i in range(20_000):
        cache.put("session", f"t{i}", "a", 1e9, 1e9)
        if i % 3 == 0:
            assert cache.get("session", "t0", 0.0) == "a"  # kept alive by its hits
        if i % 7 == 0:
            cache.pop("session", f"t{i - 5}")
        assert len(cache) <= 1000
    assert cache.get("session", "t0", 0.0) == "a"
    assert cache.get("session", "t19999", 0.0) == "a"
    assert cache.get("session", "t1000", 0.0) is None  # long since evicted
    # Eviction goes in small batches (1/64 of the size): nearly all of the size stays used.
    assert len(cache) >= 1000 - 1000 // 64


# --- Affinity over a real store -------------------------------------------------------------


@dataclass
class Setup:
    store: StateStore
    holder: StateHolder
    affinity: Affinity


@pytest.fixture(params=["redis", "memory"])
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    store: StateStore
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        store = RedisStore(server.url, KEYS, timeout=REDIS_TIMEOUT)
    else:
        store = MemoryStore()
    holder = StateHolder(current=Snapshot(active="a"))
    try:
        yield Setup(store, holder, Affinity(store, holder, cache_size=1000, ttl=3600))
    finally:
        await store.close()


async def test_record_is_cached_at_once_and_stored_behind(setup: Setup) -> None:
    setup.affinity.record("session", "a-1", "a")
    # Known locally before any Redis round trip: the request is answered without waiting.
    assert setup.affinity.cache.get("session", "a-1", 0.0) == "a"
    await setup.affinity.flush()
    assert await issuer_of(setup.store, "session", "a-1") == "a"
    assert (await setup.store.open_counts(["a"], 0.0))["a"] == 1
    assert setup.affinity.batches == 1


async def test_many_concurrent_records_share_few_batches(setup: Setup) -> None:
    count = 300
    for i in range(count):
        setup.affinity.record("session", f"s{i}", "ab"[i % 2])
    await setup.affinity.flush()
    assert 1 <= setup.affinity.batches <= count // 30
    assert len(setup.affinity.pending) == 0
    for i in range(0, count, 37):
        assert await issuer_of(setup.store, "session", f"s{i}") == "ab"[i % 2]
    assert await setup.store.open_counts(["a", "b"], 0.0) == {"a": count // 2, "b": count // 2}


async def test_records_made_during_a_flush_join_the_next_batch(setup: Setup) -> None:
    setup.affinity.record("session", "first", "a")  # its writer task is now started
    await asyncio.sleep(0)  # the writer task starts and takes "first"
    for i in range(50):
        setup.affinity.record("session", f"later{i}", "b")
    await setup.affinity.flush()
    assert setup.affinity.batches <= 3
    assert await issuer_of(setup.store, "session", "later49") == "b"
    assert await issuer_of(setup.store, "session", "first") == "a"


async def test_owner_from_cache_then_store(setup: Setup) -> None:
    affinity = setup.affinity
    affinity.record("code", "1234567", "b")
    assert await affinity.owner("code", "1234567") == "b"
    assert await affinity.owner("code", "") is None
    assert await affinity.owner("code", "unknown") is None
    # Another instance (fresh cache) learns the owner from the store, then caches it.
    await affinity.flush()
    other = Affinity(setup.store, setup.holder, cache_size=10, ttl=3600)
    assert await other.owner("code", "1234567") == "b"
    assert other.cache.get("code", "1234567", 0.0) == "b"


async def test_a_learned_owner_is_cached_no_longer_than_the_store_keeps_it(setup: Setup) -> None:
    """A copy outliving the store's record would go on naming its issuer after another
    system's id of the same value was claimed: instances' caches would disagree."""
    await setup.store.write_affinity([AffinityRecord("code", "7777777", "a", 5)], time.time())
    assert await setup.affinity.owner("code", "7777777") == "a"
    assert setup.affinity.cache.get("code", "7777777", time.time() + 1) == "a"
    assert setup.affinity.cache.get("code", "7777777", time.time() + 10) is None


async def test_claim_refuses_an_id_another_system_holds(setup: Setup) -> None:
    affinity = setup.affinity
    assert await affinity.claim("code", "1234567", "a") is None
    assert affinity.cache.get("code", "1234567", 0.0) == "a"  # cached at once
    assert await affinity.claim("code", "1234567", "b") == "a"  # from the cache
    other = Affinity(setup.store, setup.holder, cache_size=10, ttl=3600)
    assert await other.claim("code", "1234567", "b") == "a"  # from the store
    assert await other.claim("code", "1234567", "a") is None  # the holder may renew it
    assert await issuer_of(setup.store, "code", "1234567") == "a"


async def test_release_forgets_everywhere(setup: Setup) -> None:
    affinity = setup.affinity
    affinity.record("session", "a-1", "a")
    affinity.release("session", "a-1", "a")
    assert affinity.cache.get("session", "a-1", 0.0) is None
    await affinity.flush()
    assert await issuer_of(setup.store, "session", "a-1") is None
    assert await affinity.owner("session", "a-1") is None
    assert (await setup.store.open_counts(["a"], 0.0))["a"] == 0


async def test_degraded_records_pending_then_replayed(setup: Setup) -> None:
    affinity = setup.affinity
    setup.holder.set_degraded(True, "store away")
    affinity.record("session", "a-1", "a")
    affinity.record("code", "7654321", "b")
    assert [r.ident for r in affinity.pending] == ["a-1", "7654321"]
    assert affinity.batches == 0
    assert await issuer_of(setup.store, "session", "a-1") is None  # not written
    # Fail-static: this instance still routes by what it learned.
    assert await affinity.owner("session", "a-1") == "a"
    assert await affinity.owner("session", "unknown") is None  # no store look-up while degraded
    affinity.release("session", "gone", "a")  # no store call, no error

    setup.holder.set_degraded(False)
    assert await affinity.replay() == 2
    assert len(affinity.pending) == 0
    assert await issuer_of(setup.store, "session", "a-1") == "a"
    assert await issuer_of(setup.store, "code", "7654321") == "b"
    assert await affinity.replay() == 0  # nothing left


async def test_pending_is_bounded_by_its_own_size_not_the_caches() -> None:
    """What is kept for replay while Redis is away has its own bound: a small cache does not
    shorten the outage a worker can replay."""
    store = MemoryStore()
    holder = StateHolder(current=Snapshot(active="a"), degraded=True)
    affinity = Affinity(store, holder, cache_size=2, ttl=60, replay_size=3)
    for i in range(5):
        affinity.record("session", f"s{i}", "a")
    assert [r.ident for r in affinity.pending] == ["s2", "s3", "s4"]
    assert len(affinity.cache) == 2
    assert Affinity(store, holder, cache_size=2, ttl=60).pending.maxlen == REPLAY_MAX


# --- Redis dying under the affinity writer --------------------------------------------------


@pytest.fixture
async def redis_affinity(redis_server: RedisServer) -> AsyncIterator[Setup]:
    store = RedisStore(redis_server.url, KEYS, timeout=REDIS_TIMEOUT)
    holder = StateHolder(current=Snapshot(active="a"))
    try:
        yield Setup(store, holder, Affinity(store, holder, cache_size=1000, ttl=3600))
    finally:
        await store.close()


async def test_write_failure_keeps_records_for_replay(
    redis_server: RedisServer, redis_affinity: Setup
) -> None:
    affinity = redis_affinity.affinity
    affinity.record("session", "before", "a")
    await affinity.flush()
    redis_server.stop()
    # Not yet known degraded: the write fails, the request still gets its answer.
    for i in range(20):
        affinity.record("session", f"s{i}", "b")
    await affinity.flush()
    assert len(affinity.pending) == 20
    assert await affinity.owner("session", "s7") == "b"  # from the local cache
    assert await affinity.owner("session", "nowhere") is None  # store away: unknown, no error
    affinity.release("session", "before", "a")  # logged, not raised
    await affinity.flush()
    assert await affinity.replay() == 0  # still away: kept
    assert len(affinity.pending) == 20

    redis_server.start()
    written = 0
    for _ in range(3):  # the first command may meet a connection of the dead server
        written = await affinity.replay()
        if written:
            break
    assert written == 20
    assert len(affinity.pending) == 0
    assert await issuer_of(redis_affinity.store, "session", "s7") == "b"
    assert await redis_affinity.store.open_counts(["b"], 0.0) == {"b": 20}


def test_local_cache_records_for_the_write_back() -> None:
    """What an instance writes back into a Redis that lost its state: owners with the time
    left, open counts only for what it recorded itself, nothing expired."""
    cache = LocalCache(10)
    cache.put("session", "s1", "a", 1000.0, 400.0)  # recorded here: counts until 400
    cache.put("code", "c1", "a", 1000.0, 150.0)  # short code: counts for shortcode_ttl only
    cache.put("session", "s2", "b", 1000.0)  # learned from Redis: owner only
    cache.put("session", "old", "a", 50.0, 50.0)  # expired
    records = {(r.kind, r.ident): r for r in cache.records(100.0)}
    assert set(records) == {("session", "s1"), ("code", "c1"), ("session", "s2")}
    assert (records[("session", "s1")].ttl, records[("session", "s1")].counted) == (900, 300)
    assert (records[("code", "c1")].ttl, records[("code", "c1")].counted) == (900, 50)
    assert (records[("session", "s2")].system, records[("session", "s2")].counted) == ("b", 0)


def test_code_and_cid_with_one_id_are_separate_entries() -> None:
    """The compact key is one letter per kind: "code" and "cid" share a first letter."""
    cache = LocalCache(10)
    cache.put("code", "x1", "a", 1000.0, 400.0)
    cache.put("cid", "x1", "b", 1000.0)
    assert cache.get("code", "x1", 100.0) == "a"
    assert cache.get("cid", "x1", 100.0) == "b"
    kinds = {(r.kind, r.system, r.counted) for r in cache.records(100.0)}
    assert kinds == {("code", "a", 300), ("cid", "b", 0)}


async def test_write_back_goes_batch_by_batch_and_skips_what_left_the_cache() -> None:
    """The write-back makes its records one batch at a time from a snapshot of the keys (no
    second copy of the whole cache): every live entry reaches the store, and an entry that
    left the cache after the snapshot is not written."""
    store = MemoryStore()
    holder = StateHolder(current=Snapshot(active="a"))
    affinity = Affinity(store, holder, cache_size=2 * MAX_BATCH + 10, ttl=3600)
    now = time.time()
    for i in range(2 * MAX_BATCH + 10):
        affinity.cache.put("session", f"s{i}", "b", now + 3600, now + 3600)
    keys = affinity.cache.keys()
    assert len(keys) == 2 * MAX_BATCH + 10
    affinity.cache.pop("session", "s0")
    assert len(affinity.cache.records(now, keys)) == 2 * MAX_BATCH + 9
    assert await affinity.write_back() == 2 * MAX_BATCH + 9
    assert await store.open_counts(["b"], now) == {"b": 2 * MAX_BATCH + 9}
    assert await issuer_of(store, "session", f"s{2 * MAX_BATCH + 9}") == "b"
    assert await issuer_of(store, "session", "s0") is None


async def test_writer_queue_is_bounded_and_the_overflow_is_replayed() -> None:
    """Records made faster than the writer sends them queue up to QUEUE_MAX; the rest wait in
    the (bounded) replay buffer and reach the store after the next write that succeeds."""
    store = MemoryStore()
    holder = StateHolder(current=Snapshot(active="a"))
    affinity = Affinity(store, holder, cache_size=10, ttl=3600)
    for i in range(QUEUE_MAX + 5):
        affinity.record("session", f"s{i}", "b")  # no await yields: none sent yet
    assert len(affinity._queue) == QUEUE_MAX
    assert [r.ident for r in affinity.pending] == [f"s{QUEUE_MAX + i}" for i in range(5)]
    await affinity.flush()
    assert not affinity.pending
    assert await store.open_counts(["b"], time.time()) == {"b": QUEUE_MAX + 5}
