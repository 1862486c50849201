"""What kind of value each token-router key holds, and what to say when one holds another.

Redis answers a command on a key of the wrong type with `WRONGTYPE`, naming neither the key
nor the fix: someone ran `redis-cli LPUSH tokenrouter:active b`, or another application
shares the prefix. That is not an outage, so it must not read as "Redis unavailable": the
store asks Redis the TYPE of the keys the failed command touched and names the one that is
wrong, with the command that repairs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from router.errors import WrongKeyType
from router.state.keys import Keys


@dataclass(frozen=True, slots=True)
class KeyProblem:
    """A key of the router's namespace that holds something token-router cannot use: the
    wrong kind of value, or a value it cannot parse. Routing goes on without it (or on the
    last state, for `active` itself); /readyz, /api/status, `status` and the metrics name
    the key and the fix until someone repairs it, and the router recovers by itself then."""

    key: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "message": self.message}


# A counter INCR accepts and never overflows when a router adds one: Redis keeps integers
# as signed 64-bit; 18 digits stay far from the edge.
_COUNTER = re.compile(r"0|-?[1-9][0-9]{0,17}")  # and no leading zeros: INCR refuses them


def parse_counter(raw: str | None) -> int | None:
    """`<prefix>:generation` as Redis INCR and the scripts can use it; None when unusable
    (absent is 0)."""
    if raw is None:
        return 0
    return int(raw) if _COUNTER.fullmatch(raw) else None


def unusable_value(keys: Keys, key: str, value: str, why: str) -> KeyProblem:
    """The problem of a key whose value cannot be used, with its fix."""
    shown = value if len(value) <= 60 else value[:60] + "..."
    return KeyProblem(
        key,
        f"Redis key {key!r} holds {shown!r}, which token-router cannot use ({why}). "
        f"Fix: {repair_hint(keys, key)}",
    )


async def read_each(
    client: aioredis.Redis, keys: Keys, fields: Mapping[str, str], *, essential: str
) -> tuple[dict[str, Any], list[KeyProblem]]:
    """Every key of `fields` (name -> key; the name "offline" is a set, the rest strings) in
    one pipeline, each on its own: {name: value}, None for a key of another kind, which is
    named as a problem with its fix. A failure of the `essential` one, or any other error,
    raises the Redis error (the store's `_failing` words it)."""
    async with client.pipeline(transaction=False) as pipe:
        for name, key in fields.items():
            pipe.smembers(key) if name == "offline" else pipe.get(key)
        results = await pipe.execute(raise_on_error=False)
    values: dict[str, Any] = {}
    wrong: list[KeyProblem] = []
    for (name, key), result in zip(fields.items(), results, strict=True):
        values[name] = None if isinstance(result, Exception) else result
        if isinstance(result, Exception):
            if not is_wrong_type(result) or name == essential:
                raise result
            wrong.append(KeyProblem(key, str(await diagnose(client, keys, [key], result))))
    return values, wrong


def is_wrong_type(exc: BaseException) -> bool:
    """Whether Redis refused a command because a key holds another kind of value."""
    return isinstance(exc, ResponseError) and "WRONGTYPE" in str(exc)


def expected_type(keys: Keys, key: str) -> str:
    """The Redis TYPE token-router keeps at `key` (one of its own keys)."""
    fixed = {
        keys.active: "string",
        keys.recorded: "string",
        keys.offline: "set",
        keys.offline_recorded: "set",
        keys.audit: "stream",
        keys.releases: "zset",
        keys.instances: "hash",
    }
    if key in fixed:
        return fixed[key]
    rest = key.removeprefix(keys.prefix + ":")
    if rest.startswith("open:"):
        return "zset"
    if rest.startswith("release:"):
        return "hash"  # release:<id>:meta and release:<id>:files
    if rest.startswith("rollout:"):
        return "hash"  # rollout:<id>:step:<n>, a step's counts
    # aff:<kind>:<id>, preview:<system>, system:<system>:release, rollout, leader, generation
    return "string"


def repair_hint(keys: Keys, key: str) -> str:
    """The redis-cli command(s) that put `key` right, and what the operator gives up."""
    if key == keys.active:
        return (
            f"`redis-cli SET {key} <system id>` to choose the active system, or "
            f"`redis-cli DEL {key}` and the routers write back the one they route to"
        )
    if key == keys.offline:
        return (
            f"`redis-cli DEL {key}` (no system is offline then), "
            "and mark systems offline again with `token-router offline <system>`"
        )
    if key == keys.audit:
        return f"`redis-cli DEL {key}` (the switch history starts again, empty)"
    if key == keys.generation:
        return (
            f"`redis-cli DEL {key}` (the next change through token-router starts the counter "
            "again and repairs it; the routers confirm changes again from then on)"
        )
    if key == keys.rollout:
        return (
            f"`redis-cli DEL {key}` (no rollout then: new sessions follow the active system; "
            "start again with `token-router rollout start`)"
        )
    if key.startswith(f"{keys.prefix}:open:"):
        return f"`redis-cli DEL {key}` (its drain count starts again from new sessions)"
    return f"`redis-cli DEL {key}` (token-router writes it again when it needs it)"


def wrong_type_message(keys: Keys, key: str, actual: str) -> str:
    wanted = expected_type(keys, key)
    return (
        f"Redis key {key!r} holds a {actual}, not the {wanted} token-router keeps there "
        f"(Redis answered WRONGTYPE; Redis itself is up). Fix: {repair_hint(keys, key)}"
    )


async def diagnose(
    client: aioredis.Redis, keys: Keys, touched: Sequence[str], exc: BaseException
) -> WrongKeyType:
    """The error naming the first of `touched` whose type is wrong (asked of Redis now)."""
    found: Mapping[str, str | bytes] = {}
    try:
        async with client.pipeline(transaction=False) as pipe:
            for key in touched:
                pipe.type(key)
            found = dict(zip(touched, await pipe.execute(), strict=True))
    except (RedisError, OSError):
        pass  # the repair hint below still says what happened
    for key in touched:
        kind = found.get(key, "none")
        actual = kind.decode() if isinstance(kind, bytes) else str(kind)  # bytes clients too
        if actual != "none" and actual != expected_type(keys, key):
            return WrongKeyType(key, wrong_type_message(keys, key, actual))
    names = ", ".join(touched) or f"{keys.prefix}:*"
    return WrongKeyType(
        "",
        f"Redis refused a command: {exc} (one of {names} holds the wrong kind of value; "
        "check with `redis-cli TYPE <key>` and DEL the odd one)",
    )
