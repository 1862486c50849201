"""Which state store a URL names: `memory://` in this process, anything else Redis."""

from __future__ import annotations

from router.state.keys import Keys
from router.state.memory_store import MemoryStore
from router.state.redis_store import RedisStore
from router.state.sentinel import SentinelTarget
from router.state.store import StateStore


def open_store(
    url: str | SentinelTarget, keys: Keys, *, timeout: float, keyspace_events: bool
) -> StateStore:
    if isinstance(url, str) and url.startswith("memory://"):
        return MemoryStore()
    return RedisStore(url, keys, timeout=timeout, keyspace_events=keyspace_events)
