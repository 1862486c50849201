"""token-router's one Redis client policy, shared by the state store and the release store.

How a client is made (timeouts, the one retry on a dead pooled connection), how a failure
reads to the user, and how a URL is shown without its password.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from router.errors import StoreUnavailable


def redact(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def redis_client(
    url: str,
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
    client: aioredis.Redis = aioredis.from_url(
        url,
        socket_timeout=command_timeout or timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        decode_responses=decode_responses,
        client_name=client_name,
    )
    return client


def unavailable(description: str, exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"Redis at {description} is unavailable: {exc}")
