"""Redis Sentinel: `redis_sentinels` + `redis_master` instead of `redis_url`.

Through redis-py's own `redis.asyncio.sentinel`: every new connection asks the sentinels
where the master is, so after a failover the stores reconnect to the new master by
themselves (the state watcher re-subscribes and re-enables keyspace notifications there,
redis_events.py). Nothing home-made: this module only turns configuration into that client and
checks, at start, that the sentinels know the master at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from router.config import RouterConfig, Secret
from router.errors import ConfigError

# Longest reconnect pause behind Sentinel (caps redis_retry_max): a failover is followed
# within a second of the new master's promotion.
SENTINEL_RETRY_MAX = 0.25


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    password: Secret | None = None  # of the master and replicas
    sentinel_password: Secret | None = None

    @property
    def description(self) -> str:
        """For logs and answers: addresses and the master's name, never a password."""
        where = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"sentinel://{where}/{self.master}"

    def sentinel(self, *, timeout: float, command_timeout: float | None = None) -> Sentinel:
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # Asking a sentinel that does not answer is not retried (redis-py's default
            # backs off for seconds): the next sentinel of the list is asked instead.
            "retry": Retry(NoBackoff(), 0),
        }
        if self.sentinel_password is not None:
            sentinel_kwargs["password"] = self.sentinel_password.reveal()
        node_kwargs: dict[str, Any] = {
            "socket_timeout": command_timeout or timeout,
            "socket_connect_timeout": timeout,
        }
        if self.password is not None:
            node_kwargs["password"] = self.password.reveal()
        return _new_sentinel(list(self.sentinels), sentinel_kwargs=sentinel_kwargs, **node_kwargs)

    def client(
        self, *, timeout: float, command_timeout: float | None, **kwargs: Any
    ) -> aioredis.Redis:
        """A client of the current master (found again on every new connection)."""
        sentinel = self.sentinel(timeout=timeout, command_timeout=command_timeout)
        client: aioredis.Redis = sentinel.master_for(self.master, **kwargs)
        return client


# redis-py before 8 ships Sentinel.__init__ without annotations (an untyped call under
# --strict) and annotates it from 8 on: one typed name for it holds on both, where a
# `type: ignore` would be unused on one of them.
_new_sentinel = cast(Callable[..., Sentinel], Sentinel)


def parse_sentinels(key: str, items: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    out = []
    for item in items:
        host, sep, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(key, f"{item!r} is not host:port (e.g. s1:26379)")
        out.append((host, int(port)))
    return tuple(out)


def redis_target(router: RouterConfig) -> str | SentinelTarget:
    """What the stores connect to: the URL, or the master behind the sentinels."""
    if not router.redis_sentinels:
        return router.redis_url
    return SentinelTarget(
        sentinels=parse_sentinels("router.redis_sentinels", router.redis_sentinels),
        master=router.redis_master,
        password=router.redis_password,
        sentinel_password=router.redis_sentinel_password,
    )


async def check_master(target: SentinelTarget, timeout: float) -> str:
    """Ask every sentinel about the master. Raises ConfigError naming `redis_master` when
    sentinels answer but none knows it; returns "" when one knows it, else (no sentinel
    answered: Redis may be briefly away, the router starts fail-static) why not."""
    sentinel = target.sentinel(timeout=timeout)
    answered: list[str] = []
    errors: list[str] = []
    try:
        for client, (host, port) in zip(sentinel.sentinels, target.sentinels, strict=True):
            try:
                await client.sentinel_master(target.master)
            except ResponseError:
                answered.append(f"{host}:{port}")  # "No such master with that name"
                continue
            except (RedisError, OSError) as exc:
                errors.append(f"{host}:{port}: {exc.__class__.__name__}")
                continue
            return ""
    finally:
        for client in sentinel.sentinels:
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await client.aclose()
    if answered:
        raise ConfigError(
            "router.redis_master",
            f"no master named {target.master!r} is known to the sentinels "
            f"{', '.join(answered)} (check redis_master against `SENTINEL MASTERS`)",
        )
    return f"no sentinel of router.redis_sentinels answered ({'; '.join(errors)})"
