"""The traffic ledger: token requests per system and second, counted by every instance.

Each instance adds what it served since its last flush (taken from the metrics' own counters
and latency buckets: nothing is added to the request path) to the hash of the current second
(`<prefix>:traffic:<unix second>`, kept `retention` seconds). So any span of the recent past
reads as the sum of its seconds across all instances, whichever instance reads it: the
post-switch watch judges the new system since the switch and the old one before it, a rollout
step compares the target's latency with the source's over the same seconds.

A flush lands in the second it is made, up to one tick after the requests it counts; seconds
older than `SETTLED` are final and kept in memory by the reader, so a watch reads a few hashes
per tick, not its whole window.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence

from router.proxy.routing import Route
from router.state.store import StateStore
from router.state.watch import LATENCY_BUCKETS, Traffic

TOKEN_ROUTE = Route.TOKEN_CREATE.value
BOUNDS: tuple[float, ...] = tuple(LATENCY_BUCKETS)
# Seconds after which no instance adds to a second any more: a flush every tick (at most a
# few seconds) plus clock skew between hosts.
SETTLED = 5


def totals(
    local: Mapping[tuple[str, str, int], int], latency: Mapping[tuple[str, str], Sequence[int]]
) -> dict[str, Traffic]:
    """This process's token requests so far per system: counted, failed (5xx and no answer,
    status 0) and answered per latency bucket."""
    requests: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for (route, system, status), n in list(local.items()):
        if route != TOKEN_ROUTE:
            continue
        requests[system] += n
        if status == 0 or status >= 500:
            failures[system] += n
    out = {}
    for system in requests:
        buckets = tuple(latency.get((system, TOKEN_ROUTE), ()))
        out[system] = Traffic(requests[system], failures[system], buckets)
    return out


def fields(now: Mapping[str, Traffic], before: Mapping[str, Traffic]) -> dict[str, int]:
    """The hash fields to add: `<system>:r`, `<system>:f`, `<system>:b<i>` (changes only)."""
    out: dict[str, int] = {}
    for system, t in now.items():
        b = before.get(system, Traffic())
        if t.requests - b.requests:
            out[f"{system}:r"] = t.requests - b.requests
        if t.failures - b.failures:
            out[f"{system}:f"] = t.failures - b.failures
        old = b.buckets + (0,) * (len(t.buckets) - len(b.buckets))
        for i, (n, m) in enumerate(zip(t.buckets, old, strict=False)):
            if n - m:
                out[f"{system}:b{i}"] = n - m
    return out


def parse(raw: Mapping[str, int]) -> dict[str, Traffic]:
    """One second's hash -> {system: Traffic}."""
    requests: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    buckets: dict[str, list[int]] = {}
    for name, n in raw.items():
        system, _, what = name.rpartition(":")
        if what == "r":
            requests[system] += n
        elif what == "f":
            failures[system] += n
        elif what.startswith("b") and what[1:].isdigit():
            i = int(what[1:])
            if i <= len(BOUNDS):
                row = buckets.setdefault(system, [0] * (len(BOUNDS) + 1))
                row[i] += n
    systems = set(requests) | set(failures) | set(buckets)
    return {
        s: Traffic(requests[s], failures[s], tuple(buckets.get(s, ()))) for s in sorted(systems)
    }


class Ledger:
    """One instance's side of the ledger: its flushes, and a reader's cache of final seconds."""

    def __init__(
        self,
        store: StateStore,
        local: Mapping[tuple[str, str, int], int],
        latency: Mapping[tuple[str, str], Sequence[int]],
        *,
        retention: int,
    ) -> None:
        self.store = store
        self.local = local
        self.latency = latency
        self.retention = retention
        self._sent = totals(local, latency)
        self._final: dict[int, dict[str, Traffic]] = {}

    async def flush(self, now: float | None = None) -> None:
        """Add this instance's token requests since the last flush to the current second."""
        current = totals(self.local, self.latency)
        changed = fields(current, self._sent)
        if changed:
            slot = int(time.time() if now is None else now)
            await self.store.add_traffic(slot, changed, self.retention)
        self._sent = current

    async def read(
        self, first: int, last: int, now: float | None = None
    ) -> dict[int, dict[str, Traffic]]:
        """Seconds first..last of every instance's counts (final ones from memory)."""
        settled = int(time.time() if now is None else now) - SETTLED
        for old in [s for s in self._final if s < settled - self.retention]:
            del self._final[old]
        wanted = [s for s in range(first, last + 1) if s not in self._final]
        out = {s: self._final[s] for s in range(first, last + 1) if s in self._final}
        if wanted:
            for slot, raw in zip(wanted, await self.store.read_traffic(wanted), strict=True):
                found = parse(raw)
                out[slot] = found
                if slot < settled:
                    self._final[slot] = found
        return out

    async def span(self, system: str, start: float, end: float) -> Traffic:
        """`system`'s traffic from `start` to `end` (whole seconds, both included)."""
        slots = await self.read(int(start), int(end))
        total = Traffic()
        for found in slots.values():
            if system in found:
                total = total + found[system]
        return total
