"""router/releases/store.py: the release store on a real Redis, and touch's one-step rule.

A touch records who served a release and pushes its expiry forward, but only for a release
the store holds in full: after Redis restarted empty between a check's read and its touch,
a touch must not leave a ghost (a few meta fields, an index entry, a system pointer) that
passes for a stored release while its files are gone.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from router.errors import WrongKeyType
from router.releases.model import LibraryFile, ReleaseMeta
from router.releases.store import Activity, RedisReleaseStore
from router.state.keys import Keys
from tests.helpers import REDIS_TIMEOUT, RedisServer
from tests.releases.made import made_release

KEYS = Keys("tokenrouter")
FILES = [LibraryFile("/gateway/adapter.js", "application/javascript", b"var adapter = 1;\n")]


def release(label: str = "") -> ReleaseMeta:
    return made_release(FILES, label)


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisReleaseStore]:
    opened = RedisReleaseStore(redis_server.url, KEYS, timeout=REDIS_TIMEOUT)
    yield opened
    await opened.close()


async def test_touch_records_the_system_and_pushes_the_expiry(
    store: RedisReleaseStore, redis_server: RedisServer
) -> None:
    meta = release()
    await store.put(meta, FILES)
    now = time.time()
    await store.touch(Activity(meta.id, "b", now, now + 7200, label="1.0"))
    await store.touch(Activity(meta.id, "a", now + 1, now + 7200, label="2.0"))
    seen = await store.meta(meta.id)
    assert seen is not None
    assert seen.systems == ("a", "b")  # merged, each once, in order of first sight
    assert seen.last_system == "a" and seen.last_active == now + 1
    assert seen.label == "1.0"  # a label is only ever set where there was none
    assert seen.expires == pytest.approx(now + 7200)
    assert redis_server.command("GET", KEYS.system_release("b")).endswith(meta.id)
    ttl = int(redis_server.command("PTTL", KEYS.release_files(meta.id)).lstrip(":"))
    assert 7_000_000 < ttl <= 7_200_000


async def test_a_touch_after_the_release_vanished_writes_nothing(
    store: RedisReleaseStore, redis_server: RedisServer
) -> None:
    meta = release()
    await store.put(meta, FILES)
    assert await store.exists(meta.id)
    redis_server.restart()  # no persistence: back empty, as between a check's read and touch
    now = time.time()
    await store.touch(Activity(meta.id, "a", now, now + 3600, label="1.0"))
    assert not await store.exists(meta.id)  # no ghost that passes for stored
    assert await store.meta(meta.id) is None
    assert redis_server.command("EXISTS", KEYS.release_meta(meta.id)) == ":0"
    assert redis_server.command("ZSCORE", KEYS.releases, meta.id) == "$-1"
    assert redis_server.command("EXISTS", KEYS.system_release("a")) == ":0"
    # Stored again (the next check, or an archive write-back), it is whole.
    await store.put(meta, FILES)
    assert (await store.file(meta.id, "/gateway/adapter.js"))[""] == FILES[0].body


async def test_a_touch_names_a_key_of_the_wrong_type(
    store: RedisReleaseStore, redis_server: RedisServer
) -> None:
    meta = release()
    redis_server.command("RPUSH", KEYS.release_meta(meta.id), "x")
    with pytest.raises(WrongKeyType) as info:
        await store.touch(Activity(meta.id, "a", time.time(), time.time() + 60))
    assert info.value.key == KEYS.release_meta(meta.id)
