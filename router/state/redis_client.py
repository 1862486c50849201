"""token-router's one Redis client policy, shared by the state store and the release store.

How a client is made (timeouts, the one retry on a dead pooled connection; a URL or the
master behind Redis Sentinel, router/state/sentinel.py), how a failure reads to the user, and how
a URL is shown without its password.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from router.errors import StoreUnavailable
from router.state.sentinel import SentinelTarget

# Query parameters redis-py (and its Sentinel support) reads a password from.
_SECRET_PARAMS = ("password", "sentinel_password", "pass", "auth", "token")


def redact(url: str) -> str:
    """The URL with every password replaced, for answers, logs and error messages.

    Covers every form redis-py accepts: `redis://:pw@host`, `redis://user:pw@host`, a query
    `?password=pw` (or `sentinel_password=`), in any letter case; a URL that cannot be parsed
    at all is replaced whole rather than risked.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if password is not None:
        user = parts.username or ""
        netloc = f"{user}:***@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = []
        for pair in query.split("&"):
            name, sep, _ = pair.partition("=")
            if sep and name.lower() in _SECRET_PARAMS:
                pair = f"{name}=***"
            pairs.append(pair)
        query = "&".join(pairs)
    # Replaced in the text rather than rebuilt: urlunsplit would drop the empty authority of
    # `unix:///path`.
    shown = url
    if netloc != parts.netloc:
        shown = shown.replace(parts.netloc, netloc, 1)
    if query != parts.query:
        shown = shown.replace("?" + parts.query, "?" + query, 1)
    return shown


def redis_client(
    url: str | SentinelTarget,
    *,
    timeout: float,
    decode_responses: bool,
    client_name: str,
    command_timeout: float | None = None,
) -> aioredis.Redis:
    """A Redis client with token-router's one policy for every store.

    One immediate retry, on connection errors only: after Redis restarted, every pooled
    connection is dead, and the first command on each must not fail when a fresh connection
    would succeed. A Redis that is really down refuses the retry at once; a hung one is not
    retried (timeouts are excluded), so a caller waits at most `command_timeout` (default
    `timeout`) before failing static. Every command sent is safe to repeat (SETs, idempotent
    scripts, MULTI/EXEC of whole values).
    """
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    if isinstance(url, SentinelTarget):
        # The retry also covers a failover: the pooled connection to the old master fails,
        # the retry's new connection asks the sentinels for the new one.
        return url.client(
            timeout=timeout,
            command_timeout=command_timeout,
            retry=retry,
            decode_responses=decode_responses,
            client_name=client_name,
        )
    client: aioredis.Redis = aioredis.from_url(
        url,
        socket_timeout=command_timeout or timeout,
        socket_connect_timeout=timeout,
        retry=retry,
        decode_responses=decode_responses,
        client_name=client_name,
    )
    return client


async def close_client(client: aioredis.Redis) -> None:
    """Close a client and, behind Sentinel, the connections it asks the sentinels with."""
    await client.aclose()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await sentinel.aclose()


def describe(target: str | SentinelTarget) -> str:
    """Where the store is, for logs and answers, with no password."""
    return target.description if isinstance(target, SentinelTarget) else redact(target)


def unavailable(description: str, exc: BaseException) -> StoreUnavailable:
    if isinstance(exc, MasterNotFoundError):
        # redis-py appends every sentinel client's repr: the first clause says it all.
        what = str(exc).split(" : ", 1)[0]
        return StoreUnavailable(
            f"Redis at {description} is unavailable: {what} (sentinels unreachable, or no "
            "master up)"
        )
    return StoreUnavailable(f"Redis at {description} is unavailable: {exc}")
