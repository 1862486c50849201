"""Watching Redis for changes of the state: our own events channel and keyspace notifications.

Any message is only a hint to re-read (the watcher builds a whole snapshot from the keys), so
a missed one costs nothing but the resync tick's delay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from router.state.keys import Keys
from router.state.store import Change


class Noted(Protocol):
    keyspace_note: str


async def enable_keyspace_events(client: Redis) -> str:
    """Add K (keyspace), $ (strings), s (sets) and g (DEL, EXPIRE) to the server's flags;
    "" when they are on, else why not.

    Merged with what is there, never overwritten, because other applications may rely
    on the flags already set. Managed Redis often forbids CONFIG: then the resync tick is
    the propagation path, which the note (logged by the watcher) says.
    """
    try:
        flags = await client.config_get("notify-keyspace-events")
        current = str(flags.get("notify-keyspace-events") or "")
        wanted = set(current) | set("K$sg")
        if "A" in wanted:
            wanted -= set("$sg")
        if wanted != set(current):
            await client.config_set("notify-keyspace-events", "".join(sorted(wanted)))
        return ""
    except ResponseError as exc:
        return f"keyspace notifications unavailable ({exc})"


async def _close_pubsub(pubsub: Any) -> None:
    # redis-py before 8 ships PubSub.aclose without annotations (an untyped call under
    # --strict) and annotates it from 8 on: going through Any holds on both, where a
    # `type: ignore` would be unused on one of them.
    await pubsub.aclose()


async def watch_changes(
    client: Redis, keys: Keys, db: int, tick: float, keyspace_events: bool, noted: Noted
) -> AsyncGenerator[Change, None]:
    """Yield "subscribed" once listening, then "event" on any change, "tick" otherwise.
    Redis errors propagate; `noted.keyspace_note` says whether keyspace events are on."""
    pubsub = client.pubsub()
    try:
        if keyspace_events:
            noted.keyspace_note = await enable_keyspace_events(client)
        await pubsub.subscribe(keys.events, *keys.keyspace_channels(db))
        yield "subscribed"
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=tick)
            yield "event" if message is not None else "tick"
    finally:
        # Closing must not hang on a dead socket: the watcher is waiting to reconnect.
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(_close_pubsub(pubsub), timeout=1.0)
