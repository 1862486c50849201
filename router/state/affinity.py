"""Who issued each session token and short code, shared by all instances through the store.

Writes are behind the answer and group-committed: a record enters the local cache at once
and a queue that one flusher task drains, every record made while a write is in flight
joining the next one (one Redis command per batch, redis_store.py). No request waits for Redis:
the token is answered as soon as the gateway answered, and its record reaches Redis a few
milliseconds after (GATHER_DELAY plus one round trip), long before a browser could use the
token elsewhere. Look-ups
for what this instance learned are answered from the bounded local cache, with or without
Redis; records that could not be written are replayed when the store returns.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Iterable
from itertools import islice

from router.errors import StoreUnavailable
from router.state.snapshot import StateHolder
from router.state.store import AffinityKind, AffinityRecord, StateStore

log = logging.getLogger("router.affinity")
# Records per Redis command: bounds one script call's run time inside Redis.
MAX_BATCH = 500
# Seconds the writer waits for more records before sending a batch. 10 ms, not 2: at 1,000
# tokens a second that is ~100 Redis calls a second instead of ~500, and each call is a
# wake-up of both the router and Redis between requests (`python -m bench --only latency`:
# added p50 0.48-0.52 ms against 0.53-0.59 at 2 ms, the minimal aiohttp proxy 0.43-0.48).
# A record still reaches Redis long before its token can come back through another
# instance, and a follow-up whose issuer is not known yet finds it anyway (routing.fallbacks).
GATHER_DELAY = 0.010
# Records kept for replay while the store is away (oldest dropped first). Its own bound, not
# the cache's: it is empty while Redis answers, so it costs no memory in normal running,
# and a smaller cache must not shorten the outage a worker can replay (~100 s of new
# tokens at 1,000 a second).
REPLAY_MAX = 100_000
# Records, and releases, waiting for the writer at most: beyond it Redis does not keep up
# (slow, not yet known to be away) and the queue would grow with the load. Further records
# go to the replay buffer (bounded, written after the next write that succeeds); further
# releases are dropped, their entries expire by TTL, as while the store is away.
QUEUE_MAX = 20 * MAX_BATCH


class LocalCache:
    """LRU of (kind, id) -> (system, expiry, counted until), bounded in entries.

    One copy serves both look-ups and, after Redis came back empty, the write-back
    (recovery.py): an entry this instance recorded carries when it stops counting as open
    (`counted`), one it only learned from Redis carries None (whether another instance
    released it is not known here).

    Compact, because it is the largest thing a worker holds after its imports and its
    releases (SPEC section 3: peak RSS <= 80 MB per worker): the key is one string (a kind
    letter + the id) instead of a tuple, the value one int instead of a tuple: the
    counted-until time in whole seconds (+1, 0 for None) above 32 bits of expiry in whole
    seconds (rounded up), above 8 bits of the system's index. And the map is a plain dict,
    whose insertion order is the recency order (a hit or a put moves the key to the end):
    an OrderedDict keeps a linked-list node and a slot array beside its dict, ~50 bytes an
    entry more (tracemalloc: 202 -> 149 bytes with 25-character ids; docs/benchmark.md).
    """

    # One letter per kind: "code" and "cid" share a first letter.
    _LETTER = {"session": "s", "code": "c", "cid": "i"}
    _KIND = {letter: kind for kind, letter in _LETTER.items()}

    def __init__(self, size: int) -> None:
        self.size = size
        # Least recently used first (insertion order of a plain dict).
        self._items: dict[str, int] = {}
        # Evicted together: a dict finds its first live key by scanning past the slots its
        # deleted keys left (until it is next resized), so one scan per batch, not per put.
        self._batch = max(1, size // 64)
        self._systems: list[str] = []
        self._index: dict[str, int] = {}

    @classmethod
    def _key(cls, kind: str, ident: str) -> str:
        return cls._LETTER.get(kind, kind) + ident

    def get(self, kind: str, ident: str, now: float) -> str | None:
        key = self._key(kind, ident)
        packed = self._items.get(key)
        if packed is None:
            return None
        if (packed >> 8) & 0xFFFFFFFF <= now:
            del self._items[key]
            return None
        del self._items[key]
        self._items[key] = packed  # now the most recently used
        return self._systems[packed & 0xFF]

    def put(
        self, kind: str, ident: str, system: str, expiry: float, counted: float | None = None
    ) -> None:
        index = self._index.get(system)
        if index is None:
            index = self._index[system] = len(self._systems)
            self._systems.append(system)
            if index > 0xFF:
                raise ValueError("more than 256 systems")
        counted_code = 0 if counted is None else math.ceil(counted) + 1
        key = self._key(kind, ident)
        items = self._items
        items.pop(key, None)  # a renewed key moves to the end
        items[key] = (counted_code << 32 | math.ceil(expiry)) << 8 | index
        if len(items) > self.size:
            excess = len(items) - self.size + self._batch - 1
            for old in list(islice(items, excess)):
                del items[old]

    def pop(self, kind: str, ident: str) -> None:
        self._items.pop(self._key(kind, ident), None)

    def keys(self) -> list[str]:
        """A snapshot of the entries' keys, least recently used first (for `records`)."""
        return list(self._items)

    def records(self, now: float, keys: Iterable[str] | None = None) -> list[AffinityRecord]:
        """Live entries (every one, or those of `keys` still held) as records with the
        lifetimes left, for the write-back."""
        out = []
        items = self._items
        for key in list(items) if keys is None else keys:
            packed = items.get(key)
            kind = self._KIND.get(key[:1])
            if packed is None or kind is None:
                continue
            expiry = (packed >> 8) & 0xFFFFFFFF
            if expiry <= now:
                continue
            counted_code = packed >> 40
            left = 0 if counted_code == 0 else max(0, int(counted_code - 1 - now))
            system = self._systems[packed & 0xFF]
            out.append(AffinityRecord(kind, key[1:], system, max(1, int(expiry - now)), left))  # type: ignore[arg-type]
        return out

    def __len__(self) -> int:
        return len(self._items)


class Affinity:
    def __init__(
        self,
        store: StateStore,
        holder: StateHolder,
        *,
        cache_size: int,
        ttl: int,
        shortcode_ttl: int | None = None,
        replay_size: int = REPLAY_MAX,
        instance: str = "",
    ) -> None:
        self.store = store
        self.holder = holder
        self.instance = instance  # named as the issuer of what this process records
        self.ttl = ttl
        # Short codes count as open for drain only this long; their owner lives `ttl`.
        self.shortcode_ttl = ttl if shortcode_ttl is None else shortcode_ttl
        self.cache = LocalCache(cache_size)
        self.pending: deque[AffinityRecord] = deque(maxlen=replay_size)
        self._queue: list[AffinityRecord] = []
        self._releases: list[AffinityRecord] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  # write commands sent; read by metrics and tests

    def record(self, kind: AffinityKind, ident: str, system: str) -> None:
        """Remember that `system` issued `ident`: in the local cache now, in Redis shortly.

        Synchronous (it only fills the cache and queues the write), so the proxy can record
        in a plain callback after the answer is on its way (proxy.ProxyHandler._after)."""
        now = time.time()
        counted = self.open_ttl(kind)
        self.cache.put(kind, ident, system, now + self.ttl, now + counted)
        rec = AffinityRecord(kind, ident, system, self.ttl, counted, self.instance, now)
        if self.holder.degraded or len(self._queue) >= QUEUE_MAX:
            self.pending.append(rec)
            return
        self._queue.append(rec)
        self._kick()

    def release(self, kind: AffinityKind, ident: str, system: str) -> None:
        """Forget an id whose token was deleted: it no longer counts against `system`."""
        self.cache.pop(kind, ident)
        if self.holder.degraded or len(self._releases) >= QUEUE_MAX:
            return  # it expires by TTL
        self._releases.append(AffinityRecord(kind, ident, system, 0))
        self._kick()

    def open_ttl(self, kind: AffinityKind) -> int:
        """Seconds an item of `kind` counts as open on its system (drain)."""
        if kind == "code":
            return self.shortcode_ttl
        if kind == "cid":
            return 0  # a cid belongs to a short code, which is what counts
        return self.ttl

    def _kick(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def flush(self) -> None:
        """Wait until everything recorded so far was sent (or kept for replay)."""
        while self._flusher is not None:
            # Shielded: a caller that is cancelled must not cancel the shared writer.
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        try:
            # Let the records of the answers being sent right now join this batch: nobody
            # waits for it, and fewer, larger script calls cost the router less CPU.
            await asyncio.sleep(GATHER_DELAY)
            while self._queue or self._releases:
                if self._queue:
                    batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                    await self._write(batch)
                if self._releases:
                    gone, self._releases = self._releases, []
                    await self._release(gone)
        finally:
            self._flusher = None

    async def _write(self, batch: list[AffinityRecord]) -> None:
        try:
            await self.store.write_affinity(batch, time.time())
            self.batches += 1
        except StoreUnavailable as exc:
            # Fail-static: the local cache still knows, and the replay catches up.
            self.pending.extend(batch)
            log.warning("affinity of %d item(s) kept locally: %s", len(batch), exc)
            return
        if self.pending:
            # The store answers again: catch up now rather than wait for the watcher to
            # notice a recovery it may have seen before these failed.
            await self.replay()

    async def _release(self, gone: list[AffinityRecord]) -> None:
        for r in gone:
            try:
                await self.store.release(r.kind, r.ident, r.system)
            except StoreUnavailable as exc:
                log.warning(
                    "could not release %s %s of %s (it expires by TTL): %s",
                    r.kind,
                    r.ident,
                    r.system,
                    exc,
                )
                return

    async def replay(self) -> int:
        """Write what was recorded while the store was away. Returns how many were written."""
        if not self.pending:
            return 0
        batch = list(self.pending)
        self.pending.clear()
        now = time.time()
        try:
            for start in range(0, len(batch), MAX_BATCH):
                await self.store.write_affinity(batch[start : start + MAX_BATCH], now)
        except StoreUnavailable:
            self.pending.extend(batch)
            return 0
        log.info("replayed %d affinity record(s) kept while the store was away", len(batch))
        return len(batch)

    async def write_back(self) -> int:
        """Write everything this instance knows into the store (after it lost its state):
        what it recorded (still counted as open for the time left) and what it learned from
        look-ups (owners only), as far as the bounded cache holds them. Returns how many
        records were written; raises StoreUnavailable.

        Records are made one batch at a time from a snapshot of the keys: all of them at once
        were a second copy of every id in the cache (~20 MB for 100,000 entries) at the
        moment Redis came back, on top of what the outage had queued for replay.
        """
        now = time.time()
        keys = self.cache.keys()
        written = 0
        for start in range(0, len(keys), MAX_BATCH):
            batch = self.cache.records(now, keys[start : start + MAX_BATCH])
            if batch:
                await self.store.write_affinity(batch, now)
            written += len(batch)
        self.batches += 1
        return written

    async def owner(self, kind: AffinityKind, ident: str) -> str | None:
        """The issuing system, from the local cache, else the store; None when unknown."""
        if not ident:
            return None
        now = time.time()
        found = self.cache.get(kind, ident, now)
        if found is not None or self.holder.degraded:
            return found
        try:
            entry = await self.store.affinity_entry(kind, ident)
        except StoreUnavailable:
            return None
        if entry is None:
            return None
        # Kept no longer than Redis keeps it: a copy that outlived Redis's record would go on
        # naming this issuer after another system's id of the same value was claimed.
        self.cache.put(kind, ident, entry[0], now + min(entry[1], self.ttl))
        return entry[0]

    async def claim(self, kind: AffinityKind, ident: str, system: str) -> str | None:
        """Record that `system` issued `ident` unless another system is known to hold it:
        returns that other system (nothing is recorded), else None (recorded).

        For ids two systems may draw alike (7-digit short codes): the router must never hand
        out an id it still routes to another system. Awaited before the answer, unlike
        `record`, so an id is in Redis before any client can name it; atomic in Redis, so
        two instances claiming one id for two systems cannot both win. While Redis is away
        only this instance's cache is consulted and the record is kept for replay, as
        `record` does (the replay leaves an id another system claimed meanwhile to it).
        """
        now = time.time()
        cached = self.cache.get(kind, ident, now)
        if cached is not None and cached != system:
            return cached
        counted = self.open_ttl(kind)
        rec = AffinityRecord(kind, ident, system, self.ttl, counted, self.instance, now)
        if not self.holder.degraded:
            try:
                holder = await self.store.claim_affinity(rec, now)
            except StoreUnavailable as exc:
                log.warning("%s %s of %s claimed locally only: %s", kind, ident, system, exc)
            else:
                if holder is not None:
                    return holder
                self.cache.put(kind, ident, system, now + self.ttl, now + counted)
                return None
        self.cache.put(kind, ident, system, now + self.ttl, now + counted)
        self.pending.append(rec)
        return None
