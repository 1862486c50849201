"""A token-router key of the wrong type in Redis is named, with its fix, never "unavailable"."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from router.errors import StoreUnavailable, WrongKeyType
from router.releases.store import RedisReleaseStore
from router.state.key_problems import expected_type, repair_hint, wrong_type_message
from router.state.keys import Keys
from router.state.redis_store import RedisStore
from router.state.snapshot import Snapshot, StateHolder, StateWatcher
from router.state.store import AffinityRecord
from tests.helpers import REDIS_TIMEOUT, RedisServer, switch, wait_until

KEYS = Keys("tokenrouter")
KNOWN = ("a", "b")

# --- pure: expected types and hints -----------------------------------------------------------


def test_expected_types_of_every_key_family() -> None:
    assert expected_type(KEYS, KEYS.active) == "string"
    assert expected_type(KEYS, KEYS.recorded) == "string"
    assert expected_type(KEYS, KEYS.offline) == "set"
    assert expected_type(KEYS, KEYS.audit) == "stream"
    assert expected_type(KEYS, KEYS.releases) == "zset"
    assert expected_type(KEYS, KEYS.open_items("a")) == "zset"
    assert expected_type(KEYS, KEYS.release_meta("r1")) == "hash"
    assert expected_type(KEYS, KEYS.release_files("r1")) == "hash"
    assert expected_type(KEYS, KEYS.affinity("session", "s1")) == "string"
    assert expected_type(KEYS, KEYS.preview("a")) == "string"


def test_hints_name_the_key_and_the_command() -> None:
    assert "redis-cli SET tokenrouter:active <system id>" in repair_hint(KEYS, KEYS.active)
    assert "redis-cli DEL tokenrouter:offline" in repair_hint(KEYS, KEYS.offline)
    assert "token-router offline" in repair_hint(KEYS, KEYS.offline)
    assert "redis-cli DEL tokenrouter:audit" in repair_hint(KEYS, KEYS.audit)
    message = wrong_type_message(KEYS, KEYS.open_items("b"), "list")
    assert message.startswith("Redis key 'tokenrouter:open:b' holds a list, not the zset")
    assert "unavailable" not in message
    assert "`redis-cli DEL tokenrouter:open:b`" in message


# --- against a real redis-server --------------------------------------------------------------


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_server.url, KEYS, timeout=REDIS_TIMEOUT)
    try:
        yield store
    finally:
        await store.close()


StoreCall = Callable[[RedisStore], Awaitable[object]]

# (key made wrong, the wrong value written with redis-cli, the store call that trips on it)
CASES: list[tuple[str, tuple[str, ...], StoreCall]] = [
    (KEYS.active, ("RPUSH", KEYS.active, "b"), lambda s: s.read_state()),
    (KEYS.active, ("RPUSH", KEYS.active, "b"), lambda s: switch(s, "b", "test", KNOWN)),
    (KEYS.audit, ("SET", KEYS.audit, "x"), lambda s: s.audit(10)),
    (KEYS.audit, ("SET", KEYS.audit, "x"), lambda s: switch(s, "b", "test", KNOWN)),
    (KEYS.offline, ("SET", KEYS.offline, "x"), lambda s: s.set_offline("a", True, "test")),
    (KEYS.open_items("a"), ("SET", KEYS.open_items("a"), "x"), lambda s: s.open_counts(KNOWN, 0)),
    (
        KEYS.open_items("a"),
        ("SET", KEYS.open_items("a"), "x"),
        lambda s: s.write_affinity([AffinityRecord("session", "s1", "a", 60)], 0.0),
    ),
    (
        KEYS.affinity("session", "s1"),
        ("RPUSH", KEYS.affinity("session", "s1"), "a"),
        lambda s: s.affinity_entry("session", "s1"),
    ),
    (
        KEYS.open_items("b"),
        ("SET", KEYS.open_items("b"), "x"),
        lambda s: s.release("session", "s1", "b"),
    ),
]


@pytest.mark.parametrize(
    ("key", "command", "call"), CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)]
)
async def test_wrong_type_names_the_key_and_its_fix(
    redis_server: RedisServer,
    store: RedisStore,
    key: str,
    command: tuple[str, ...],
    call: StoreCall,
) -> None:
    redis_server.command(*command)
    with pytest.raises(WrongKeyType) as info:
        await call(store)
    assert info.value.key == key
    message = str(info.value)
    assert message.startswith(f"Redis key {key!r} holds a ")
    assert "unavailable" not in message
    assert f"redis-cli DEL {key}" in message or f"redis-cli SET {key}" in message
    assert isinstance(info.value, StoreUnavailable)  # callers still fail static


@pytest.mark.parametrize(
    ("key", "field"),
    [
        (KEYS.offline, "offline"),
        (KEYS.recorded, "recorded"),
        (KEYS.epoch, "epoch"),
        (KEYS.rollout, "rollout"),
        (KEYS.generation, "generation"),
    ],
)
async def test_read_state_names_a_wrong_key_and_reads_the_rest(
    redis_server: RedisServer, store: RedisStore, key: str, field: str
) -> None:
    """Only `active` itself of the wrong kind stops the read: any other key is named as a
    problem, with its fix, and `active` is still followed (issue 25)."""
    redis_server.command("SET", KEYS.active, "b")
    redis_server.command("RPUSH", key, "x")
    stored = await store.read_state()
    assert stored.active == "b"
    assert stored.unreadable == {field}
    [problem] = stored.problems
    assert problem.key == key
    assert problem.message.startswith(f"Redis key {key!r} holds a list")
    assert f"redis-cli DEL {key}" in problem.message


async def test_watcher_reports_the_wrong_key_and_recovers_once_fixed(
    redis_server: RedisServer, store: RedisStore
) -> None:
    redis_server.command("RPUSH", KEYS.active, "b")
    holder = StateHolder(current=Snapshot(active="a"))
    watcher = StateWatcher(store, holder, KNOWN, instance="t", resync_interval=0.1, retry_max=0.2)
    task = asyncio.create_task(watcher.run())
    try:
        await wait_until(lambda: holder.degraded)
        # What /readyz and `token-router status` show: the key and the fix, not an outage.
        assert holder.last_error.startswith("Redis key 'tokenrouter:active' holds a list")
        assert holder.current.active == "a"  # fail-static meanwhile
        redis_server.command("DEL", KEYS.active)
        await wait_until(lambda: holder.synced and not holder.degraded)
        assert holder.current.active == "a"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_release_store_names_the_wrong_key_too(redis_server: RedisServer) -> None:
    store = RedisReleaseStore(redis_server.url, KEYS, timeout=REDIS_TIMEOUT)
    try:
        redis_server.command("SET", KEYS.releases, "x")
        with pytest.raises(WrongKeyType) as info:
            await store.list(0.0)
        assert info.value.key == KEYS.releases
        assert str(info.value).startswith("Redis key 'tokenrouter:releases' holds a string")
        redis_server.command("RPUSH", KEYS.release_meta("r1"), "x")
        redis_server.command("DEL", KEYS.releases)
        with pytest.raises(WrongKeyType) as info:
            await store.meta("r1")
        assert info.value.key == KEYS.release_meta("r1")
        assert "holds a list, not the hash" in str(info.value)
    finally:
        await store.close()
