"""What a system holds open, in Redis: the rows the affinity script writes and the read of
the open-items set with who issued each item.

The set `<prefix>:open:<system>` (score: when the item stops counting) is what drain counts;
`<prefix>:issued:<kind>:<id>` beside each item names the router instance that issued it and
when, written by the same scripts and living as long as the item counts (scripts.py).
"""

from __future__ import annotations

from redis import asyncio as aioredis

from router.state.keys import Keys
from router.state.store import AffinityRecord, OpenItem, issued_value, member, parse_issued


def issued_args(keys: Keys, record: AffinityRecord) -> list[str | int]:
    """The scripts' issued key, value and lifetime for `record` ("" when its issuer is not
    known: a record replayed from a cache)."""
    if not record.issuer:
        return ["", "", 0]
    key = keys.issued(record.kind, record.ident)
    return [key, issued_value(record.issuer, record.issued), record.counted]


def affinity_row(keys: Keys, r: AffinityRecord, now: float) -> list[str | int | float]:
    """One record as scripts.AFFINITY takes it."""
    return [
        keys.affinity(r.kind, r.ident),
        keys.open_items(r.system) if r.counted > 0 else "",
        r.system,
        r.ttl,
        member(r.kind, r.ident),
        now + r.counted,
        *issued_args(keys, r),
    ]


async def read_open_items(
    client: aioredis.Redis, keys: Keys, system: str, now: float, limit: int
) -> tuple[int, list[OpenItem]]:
    """(how many, the `limit` that stop counting first) of what `system` holds open: the
    oldest of a kind first (each kind counts for its own ttl from its issue)."""
    key = keys.open_items(system)
    async with client.pipeline(transaction=False) as pipe:
        pipe.zcount(key, f"({now}", "+inf")
        pipe.zrangebyscore(key, f"({now}", "+inf", start=0, num=limit, withscores=True)
        total, rows = await pipe.execute()
    members = [(str(m).partition(":"), float(score)) for m, score in rows]
    issued = []
    if members:
        issued = await client.mget([keys.issued(kind, ident) for (kind, _, ident), _ in members])
    items = []
    for ((kind, _, ident), expires), value in zip(members, issued, strict=True):
        issuer, when = parse_issued(None if value is None else str(value))
        items.append(OpenItem(kind, ident, expires, issuer, when))  # type: ignore[arg-type]
    return int(total), items
