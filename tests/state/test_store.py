"""router/state/store.py: one behavioural suite run against RedisStore (real redis-server) and
MemoryStore; Redis-only behaviour (a dead server, keyspace flags) against the real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from router.errors import Conflict, StoreUnavailable
from router.state.connect import open_store
from router.state.keys import Keys
from router.state.memory_store import MemoryStore
from router.state.redis_client import redact
from router.state.redis_store import RedisStore
from router.state.store import AffinityRecord, AuditEntry, StateStore
from tests.helpers import REDIS_TIMEOUT, RedisServer, free_port, issuer_of, switch

KEYS = Keys("tokenrouter")
KNOWN = ("a", "b", "c")


@dataclass
class StoreCase:
    """One store under test, three handles on it ("instances") and a bare SET."""

    kind: str
    store: StateStore
    instances: list[StateStore]
    bare_set: Callable[[str], None]


@pytest.fixture(params=["redis", "memory"])
async def case(request: pytest.FixtureRequest) -> AsyncIterator[StoreCase]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        stores: list[StateStore] = [
            RedisStore(server.url, KEYS, timeout=REDIS_TIMEOUT) for _ in range(3)
        ]

        def bare_set(value: str) -> None:
            assert server.command("SET", KEYS.active, value) == "+OK"

        result = StoreCase("redis", stores[0], stores, bare_set)
    else:
        memory = MemoryStore()
        stores = [memory, memory, memory]
        result = StoreCase("memory", memory, stores, memory.set_active_raw)
    try:
        yield result
    finally:
        for store in stores:
            await store.close()


def moves(entries: list[AuditEntry]) -> list[tuple[str, str, str, str]]:
    """(action, from, to, source), oldest first."""
    return [(e.action, e.from_, e.to, e.source) for e in reversed(entries)]


# --- active system and the audit ------------------------------------------------------------


async def test_empty_store(case: StoreCase) -> None:
    state = await case.store.read_state()
    assert (state.active, state.offline, state.recorded) == (None, frozenset(), None)
    assert await case.store.audit(10) == []
    await case.store.ping()


async def test_switch_records_from_to_source(case: StoreCase) -> None:
    store = case.store
    assert await switch(store, "a", "cli:alice", KNOWN) == ""
    assert await switch(store, "b", "api:bob", KNOWN) == "a"
    state = await store.read_state()
    assert (state.active, state.recorded) == ("b", "b")
    assert moves(await store.audit(10)) == [
        ("switch", "", "a", "cli:alice"),
        ("switch", "a", "b", "api:bob"),
    ]
    entries = await store.audit(10)
    assert entries[0].time >= entries[1].time > 0
    assert entries[0].id != entries[1].id
    assert entries[0].to_json() == {
        "id": entries[0].id,
        "time": entries[0].time,
        "action": "switch",
        "source": "api:bob",
        "from": "a",
        "to": "b",
        "reason": None,
        "forced": False,
    }


async def test_switch_to_same_system_records_nothing(case: StoreCase) -> None:
    await switch(case.store, "a", "cli", KNOWN)
    assert await switch(case.store, "a", "cli", KNOWN) == "a"
    assert len(await case.store.audit(10)) == 1


async def test_audit_count_newest_first(case: StoreCase) -> None:
    for system in ("a", "b", "c", "a"):
        await switch(case.store, system, "cli", KNOWN)
    latest = await case.store.audit(2)
    assert [(e.from_, e.to) for e in latest] == [("c", "a"), ("b", "c")]


async def test_switch_to_offline_system_conflicts(case: StoreCase) -> None:
    await switch(case.store, "a", "cli", KNOWN)
    await case.store.set_offline("b", True, "cli")
    with pytest.raises(Conflict) as info:
        await switch(case.store, "b", "cli", KNOWN)
    assert info.value.status == 409
    assert info.value.system == "b"
    assert "'b'" in info.value.message and "offline" in info.value.message
    assert (await case.store.read_state()).active == "a"
    assert [e.action for e in await case.store.audit(10)] == ["offline", "switch"]


async def test_bare_set_observed_by_three_instances_recorded_once(case: StoreCase) -> None:
    await switch(case.store, "a", "cli", KNOWN)
    case.bare_set("b")
    results = await asyncio.gather(
        *(
            store.record_observed(f"external (seen by inst-{i})", KNOWN)
            for i, store in enumerate(case.instances)
        )
    )
    assert sorted(results) == [False, False, True]
    winner = results.index(True)
    assert moves(await case.store.audit(10)) == [
        ("switch", "", "a", "cli"),
        ("switch", "a", "b", f"external (seen by inst-{winner})"),
    ]
    # Seen again later (the periodic re-read): still once.
    for store in case.instances:
        assert await store.record_observed("again", KNOWN) is False
    assert len(await case.store.audit(10)) == 2
    assert (await case.store.read_state()).recorded == "b"


async def test_record_observed_ignores_unknown_and_missing(case: StoreCase) -> None:
    assert await case.store.record_observed("x", KNOWN) is False  # nothing stored
    await switch(case.store, "a", "cli", KNOWN)
    case.bare_set("nonsense")
    assert await case.store.record_observed("x", KNOWN) is False
    assert len(await case.store.audit(10)) == 1
    assert (await case.store.read_state()).recorded == "a"


async def test_switch_after_unrecorded_bare_set_records_both(case: StoreCase) -> None:
    await switch(case.store, "a", "cli", KNOWN)
    case.bare_set("b")  # nobody observed it yet
    assert await switch(case.store, "c", "api", KNOWN) == "b"
    assert moves(await case.store.audit(10)) == [
        ("switch", "", "a", "cli"),
        ("switch", "a", "b", "external"),
        ("switch", "b", "c", "api"),
    ]


async def test_switch_back_after_unrecorded_bare_set(case: StoreCase) -> None:
    await switch(case.store, "a", "cli", KNOWN)
    case.bare_set("b")
    assert await switch(case.store, "a", "api", KNOWN) == "b"
    assert [(e.from_, e.to) for e in reversed(await case.store.audit(10))] == [
        ("", "a"),
        ("a", "b"),
        ("b", "a"),
    ]


async def test_switch_after_refused_bare_set(case: StoreCase) -> None:
    await switch(case.store, "a", "cli", KNOWN)
    case.bare_set("nonsense")
    assert await switch(case.store, "b", "api", KNOWN) == "a"
    assert moves(await case.store.audit(10)) == [
        ("switch", "", "a", "cli"),
        ("switch", "a", "b", "api"),
    ]


async def test_a_seed_is_recorded_by_the_caller(case: StoreCase) -> None:
    _, seeded = await case.store.restore("1:1", "b", ())
    assert seeded is True
    assert (await case.store.read_state()).active == "b"
    assert await case.store.audit(10) == []  # the caller records a seed (record_observed)
    assert await case.store.record_observed("seed", KNOWN) is True
    assert moves(await case.store.audit(10)) == [("switch", "", "b", "seed")]


# --- offline --------------------------------------------------------------------------------


async def test_set_offline_and_online_audited_once(case: StoreCase) -> None:
    store = case.store
    await store.set_offline("b", True, "cli:alice")
    await store.set_offline("b", True, "cli:alice")  # already offline: no second entry
    assert (await store.read_state()).offline == frozenset({"b"})
    await store.set_offline("c", True, "api")
    assert (await store.read_state()).offline == frozenset({"b", "c"})
    await store.set_offline("b", False, "api:bob")
    await store.set_offline("b", False, "api:bob")
    assert (await store.read_state()).offline == frozenset({"c"})
    assert moves(await store.audit(10)) == [
        ("offline", "b", "b", "cli:alice"),
        ("offline", "c", "c", "api"),
        ("online", "b", "b", "api:bob"),
    ]


async def test_audit_pages_and_since(case: StoreCase) -> None:
    store = case.store
    for system in ("a", "b", "c", "d", "e"):
        await store.set_offline(system, True, "cli")
    newest_first = await store.audit(10)
    assert [e.to for e in newest_first] == ["e", "d", "c", "b", "a"]
    first = await store.audit(2)
    assert [e.to for e in first] == ["e", "d"]
    second = await store.audit(2, before=first[-1].id)
    assert [e.to for e in second] == ["c", "b"]
    assert [e.to for e in await store.audit(2, before=second[-1].id)] == ["a"]
    assert await store.audit(2, before=newest_first[-1].id) == []
    # since: a time in seconds, compared with the time each entry was written
    # when c was written, by the entry's id (Redis's clock, in milliseconds; the `time` field
    # is the writer's, rounded: a few ms apart), so b and a may share its millisecond
    since = int(newest_first[2].id.split("-")[0]) / 1000
    recent = await store.audit(10, since=since)
    assert {"c", "d", "e"} <= {e.to for e in recent}
    assert all(int(e.id.split("-")[0]) >= since * 1000 for e in recent)
    assert [e.to for e in await store.audit(10, since=time.time() + 60)] == []
    assert len(await store.audit(10, since=0)) == 5


# --- change notifications -------------------------------------------------------------------


async def next_event(changes: AsyncIterator[str]) -> str:
    """The next "event", skipping ticks (a tick may come first on any store)."""
    async with asyncio.timeout(10):
        while (change := await anext(changes)) != "event":
            assert change == "tick"
    return change


async def test_changes_signal_switch_offline_and_bare_set(case: StoreCase) -> None:
    changes = case.store.changes(5.0)
    try:
        assert await anext(changes) == "subscribed"
        # Each write lands before anyone waits for it (as while a watcher re-reads after the
        # previous change): the store keeps it for the next wait, none is lost.
        await switch(case.instances[1], "b", "cli", KNOWN)
        assert await next_event(changes) == "event"
        await case.instances[2].set_offline("a", True, "cli")
        assert await next_event(changes) == "event"
        case.bare_set("c")
        assert await next_event(changes) == "event"
    finally:
        await changes.aclose()  # type: ignore[attr-defined]


async def test_changes_tick_when_quiet(case: StoreCase) -> None:
    changes = case.store.changes(0.01)
    try:
        assert await anext(changes) == "subscribed"
        async with asyncio.timeout(10):
            while await anext(changes) != "tick":
                pass
    finally:
        await changes.aclose()  # type: ignore[attr-defined]


# --- affinity and open counts ---------------------------------------------------------------


async def test_affinity_write_lookup_release(case: StoreCase) -> None:
    now = time.time()
    await case.store.write_affinity(
        [
            AffinityRecord("session", "a-tok1", "a", 3600),
            AffinityRecord("session", "b-tok2", "b", 3600),
            AffinityRecord("code", "1234567", "a", 3600),
        ],
        now,
    )
    other = case.instances[1]  # another instance sees what this one wrote
    assert await issuer_of(other, "session", "a-tok1") == "a"
    assert await issuer_of(other, "session", "b-tok2") == "b"
    assert await issuer_of(other, "code", "1234567") == "a"
    assert await issuer_of(other, "session", "1234567") is None  # kinds are apart
    assert await issuer_of(other, "session", "unknown") is None
    assert await other.open_counts(["a", "b", "c"], now) == {"a": 2, "b": 1, "c": 0}

    await other.release("session", "a-tok1", "a")
    assert await issuer_of(case.store, "session", "a-tok1") is None
    assert await case.store.open_counts(["a", "b"], now) == {"a": 1, "b": 1}
    await other.release("session", "never-issued", "a")  # harmless
    assert await case.store.open_counts(["a"], now) == {"a": 1}


async def test_affinity_rewrite_moves_nothing_twice(case: StoreCase) -> None:
    now = 1_000.0
    record = AffinityRecord("code", "7654321", "b", 60)
    await case.store.write_affinity([record], now)
    await case.store.write_affinity([record], now + 1)
    assert await case.store.open_counts(["b"], now + 1) == {"b": 1}


async def test_the_first_issuer_keeps_an_id(case: StoreCase) -> None:
    """Two systems drew one short code: neither a claim nor a later write moves it (issue
    25: the last create silently took the code and its look-ups to the other system)."""
    now = time.time()
    assert await case.store.claim_affinity(AffinityRecord("code", "4242424", "a", 60), now) is None
    other = case.instances[1]
    assert await other.claim_affinity(AffinityRecord("code", "4242424", "b", 60), now) == "a"
    assert await other.claim_affinity(AffinityRecord("code", "4242424", "a", 60), now) is None
    await other.write_affinity([AffinityRecord("code", "4242424", "b", 60)], now)
    assert await issuer_of(case.store, "code", "4242424") == "a"
    assert await case.store.open_counts(["a", "b"], now) == {"a": 1, "b": 0}
    entry = await other.affinity_entry("code", "4242424")
    assert entry is not None and entry[0] == "a" and 0 < entry[1] <= 60
    assert await other.affinity_entry("code", "1111111") is None


async def test_open_counts_drop_expired(case: StoreCase) -> None:
    # `now` is passed in, so expiry is tested without waiting for the clock.
    await case.store.write_affinity(
        [AffinityRecord("session", "s1", "a", 10), AffinityRecord("session", "s2", "a", 100)],
        1_000.0,
    )
    await case.store.write_affinity([AffinityRecord("code", "c1", "b", 10)], 1_050.0)
    assert await case.store.open_counts(["a", "b"], 1_005.0) == {"a": 2, "b": 1}
    assert await case.store.open_counts(["a", "b"], 1_011.0) == {"a": 1, "b": 1}
    assert await case.store.open_counts(["a", "b"], 1_061.0) == {"a": 1, "b": 0}
    assert await case.store.open_counts(["a", "b"], 1_101.0) == {"a": 0, "b": 0}
    assert await case.store.open_counts([], 1_101.0) == {}


async def test_preview_marks(case: StoreCase) -> None:
    assert await case.store.previewing(["a", "b"]) == frozenset()
    await case.store.mark_preview("b", 60)
    assert await case.instances[1].previewing(["a", "b", "c"]) == frozenset({"b"})
    await case.store.mark_preview("b", 60)  # refresh
    assert await case.store.previewing(["a", "b"]) == frozenset({"b"})


# --- Redis only -----------------------------------------------------------------------------

StoreCall = Callable[[RedisStore], Awaitable[object]]
CALLS: list[tuple[str, StoreCall]] = [
    ("ping", lambda s: s.ping()),
    ("read_state", lambda s: s.read_state()),
    ("switch", lambda s: switch(s, "a", "cli", KNOWN)),
    ("set_offline", lambda s: s.set_offline("a", True, "cli")),
    ("record_observed", lambda s: s.record_observed("x", KNOWN)),
    ("audit", lambda s: s.audit(10)),
    ("write_affinity", lambda s: s.write_affinity([AffinityRecord("session", "x", "a", 9)], 1.0)),
    ("affinity_entry", lambda s: s.affinity_entry("session", "x")),
    ("claim_affinity", lambda s: s.claim_affinity(AffinityRecord("code", "x", "a", 9), 1.0)),
    ("release", lambda s: s.release("session", "x", "a")),
    ("open_counts", lambda s: s.open_counts(["a"], 1.0)),
    ("mark_preview", lambda s: s.mark_preview("a", 10)),
    ("previewing", lambda s: s.previewing(["a"])),
    ("changes", lambda s: anext(s.changes(0.1))),
]


@pytest.fixture
async def redis_store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_server.url, KEYS, timeout=REDIS_TIMEOUT)
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize("call", [c[1] for c in CALLS], ids=[c[0] for c in CALLS])
async def test_store_unavailable_when_redis_stopped(
    redis_server: RedisServer, redis_store: RedisStore, call: StoreCall
) -> None:
    await redis_store.ping()  # a pooled connection exists, then the server dies
    redis_server.stop()
    with pytest.raises(StoreUnavailable) as info:
        await call(redis_store)
    assert redis_store.description in str(info.value)


async def test_store_recovers_when_redis_returns(
    redis_server: RedisServer, redis_store: RedisStore
) -> None:
    await switch(redis_store, "a", "cli", KNOWN)
    redis_server.stop()
    with pytest.raises(StoreUnavailable):
        await redis_store.read_state()
    redis_server.start()
    # The first command may meet a pooled connection of the dead server; then it reconnects.
    for _ in range(3):
        try:
            await redis_store.ping()
            break
        except StoreUnavailable:
            continue
    assert (await redis_store.read_state()).active is None  # no persistence: came back empty


async def test_password_never_in_errors() -> None:
    url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    store = RedisStore(url, KEYS, timeout=REDIS_TIMEOUT)
    try:
        assert "hunter2" not in store.description
        with pytest.raises(StoreUnavailable) as info:
            await store.read_state()
        assert "hunter2" not in str(info.value)
    finally:
        await store.close()


def keyspace_flags(server: RedisServer) -> str:
    """notify-keyspace-events as the server holds it, read with a raw CONFIG GET."""
    reply = server.command("CONFIG", "GET", "notify-keyspace-events")
    # *2 $22 notify-keyspace-events $<n> <flags>; an empty value ends the reply at "$0".
    return "" if reply.endswith("$0") else reply.split("\r\n")[-1]


async def test_keyspace_flags_merged_not_overwritten(
    redis_server: RedisServer, redis_store: RedisStore
) -> None:
    redis_server.command("CONFIG", "SET", "notify-keyspace-events", "Ex")
    changes = redis_store.changes(1.0)
    try:
        assert await anext(changes) == "subscribed"
    finally:
        await changes.aclose()  # type: ignore[attr-defined]
    flags = keyspace_flags(redis_server)
    assert set("Ex") <= set(flags)  # what another application relies on stays
    assert set("K") <= set(flags) and (set("$sg") <= set(flags) or "A" in flags)
    assert redis_store.keyspace_note == ""


async def test_keyspace_events_off_leaves_server_config(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, KEYS, timeout=REDIS_TIMEOUT, keyspace_events=False)
    changes = store.changes(1.0)
    try:
        assert await anext(changes) == "subscribed"
    finally:
        await changes.aclose()  # type: ignore[attr-defined]
        await store.close()
    assert keyspace_flags(redis_server) == ""


async def test_custom_prefix_and_db(redis_server: RedisServer) -> None:
    store = RedisStore(
        f"redis://127.0.0.1:{redis_server.port}/2", Keys("{blue}"), timeout=REDIS_TIMEOUT
    )
    try:
        await switch(store, "a", "cli", KNOWN)
    finally:
        await store.close()
    client = aioredis.from_url(f"redis://127.0.0.1:{redis_server.port}/2", decode_responses=True)
    try:
        assert await client.get("{blue}:active") == "a"
        assert await client.xlen("{blue}:audit") == 1
    finally:
        await client.aclose()
    assert redis_server.command("EXISTS", "{blue}:active") == ":0"  # not in db 0


def test_open_store_picks_implementation() -> None:
    assert isinstance(open_store("memory://", KEYS, timeout=1, keyspace_events=True), MemoryStore)


async def test_open_store_redis() -> None:
    store = open_store("redis://127.0.0.1:1/0", KEYS, timeout=1, keyspace_events=True)
    try:
        assert isinstance(store, RedisStore)
    finally:
        await store.close()


# --- redact ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://user:pw@redis.internal:6379/1", "redis://user:***@redis.internal:6379/1"),
        ("rediss://u:p%40ss@r:6380/0", "rediss://u:***@r:6380/0"),
        ("redis://user@r:6379/0", "redis://user@r:6379/0"),
        ("memory://", "memory://"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
    ids=["no-auth", "password-only", "user-password", "encoded-at", "user-only", "memory", "unix"],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected


async def test_restore_puts_back_epoch_active_and_offline_once(redis_server: RedisServer) -> None:
    first, second = (RedisStore(redis_server.url, KEYS, timeout=1.0) for _ in range(2))
    try:
        assert await first.restore("e1:1.0", "b", ["c"], known=True) == ("e1:1.0", True)
        # The second router finds the epoch written: it adopts it, writes nothing else.
        assert await second.restore("e2:2.0", "a", ["d"], known=True) == ("e1:1.0", False)
        state = await second.read_state()
        assert (state.active, state.offline, state.epoch) == ("b", frozenset({"c"}), "e1:1.0")
    finally:
        await first.close()
        await second.close()


async def test_known_state_replaces_a_newcomers_default_only_while_unchanged(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, KEYS, timeout=1.0)
    try:
        # A router with no state of its own starts on an empty Redis: its default is marked.
        assert (await store.restore("e1:1.0", "a", (), known=False))[1] is True
        assert redis_server.command("GET", KEYS.default_seed).endswith("a")
        # A router that knew the state (b) arrives: its last known state wins.
        assert (await store.restore("e2:2.0", "b", (), known=True))[1] is True
        assert (await store.read_state()).active == "b"
        assert redis_server.command("EXISTS", KEYS.default_seed) == ":0"
        # A default someone switched away from (a bare SET here) is never replaced.
        redis_server.command("FLUSHALL")
        await store.restore("e3:3.0", "a", (), known=False)
        redis_server.command("SET", KEYS.active, "c")
        assert (await store.restore("e4:4.0", "b", (), known=True))[1] is False
        assert (await store.read_state()).active == "c"
        # Nor is a value a router that knew the state put back.
        redis_server.command("FLUSHALL")
        await store.restore("e5:5.0", "b", (), known=True)
        assert (await store.restore("e6:6.0", "a", (), known=True))[1] is False
        assert (await store.read_state()).active == "b"
    finally:
        await store.close()
