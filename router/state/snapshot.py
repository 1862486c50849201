"""Dynamic state: the watcher that turns store events into one validated, immutable Snapshot.

On any event and on a bounded tick, the watcher re-reads the authoritative keys and builds a
complete Snapshot; an unchanged one is dropped, a changed one replaces the current one in a
single assignment. The request path only ever reads `holder.current`: no per-request Redis
round trip for routing. Store loss keeps the last snapshot (fail-static) and marks degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from router.errors import StoreUnavailable, WrongKeyType
from router.state.key_problems import KeyProblem
from router.state.rollout import Share, loads, share_of
from router.state.store import RolloutRestore, StateStore, StoredState

log = logging.getLogger("router.state")


REFUSED_UNKNOWN = "unknown"  # names no configured system
REFUSED_OFFLINE = "offline"  # names a system an operator marked offline
# The active system's own offline mark, added outside token-router (a bare SADD): refused,
# the system stays active and online (`token-router offline <id> --force` is the way).
REFUSED_OFFLINE_MARK = "offline-mark"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A value found in `<prefix>:active` that routing refused, and why (or, for
    REFUSED_OFFLINE_MARK, the active system's offline mark in `<prefix>:offline`)."""

    value: str
    since: float
    reason: str = REFUSED_UNKNOWN

    def describe(self) -> str:
        if self.reason == REFUSED_OFFLINE:
            return "names a system that is marked offline"
        if self.reason == REFUSED_OFFLINE_MARK:
            return (
                "is the active system, marked offline outside token-router (a bare SADD); "
                "the mark is refused"
            )
        return "names no configured system"


@dataclass(frozen=True, slots=True)
class Snapshot:
    active: str
    offline: frozenset[str] = frozenset()
    refused: Refusal | None = None
    rollout: Share | None = None  # the running rollout's share of new sessions, if any
    generation: int = 0  # of the last write through token-router this snapshot includes
    # Keys holding something token-router cannot use, each with its fix (key_problems.py):
    # routing goes on without them; every surface names them until they are repaired.
    problems: tuple[KeyProblem, ...] = ()

    def is_offline(self, system: str) -> bool:
        return system in self.offline


def build_snapshot(
    stored: StoredState, known: Sequence[str], previous: Snapshot, now: float
) -> Snapshot:
    """Validate what the store holds against the configured systems.

    A value naming no configured system is refused: routing stays on the previous active
    system and the refusal is kept (with the time it was first seen) for /readyz, the admin
    page and metrics. So is a change of the value to a system marked offline (SPEC section 6:
    a bare `SET` to an offline system would send every new session to a 503). The system
    that is already active being marked offline is not a change of `active`: it stays (its
    requests get the offline 503, as the operator asked) when token-router marked it (`offline
    --force`, `stored.offline_forced`); a bare `SADD` of it is refused instead, the same gate
    as the bare `SET` (every new session would get a 503): it stays active and online, and
    the refusal shows like a refused value. A missing value also keeps the previous system;
    the watcher re-seeds it.

    A key that cannot be read (`stored.problems`) is carried as a problem: the offline set
    stays as last read; an unusable rollout document routes nothing (new sessions follow
    `active`, never a share nobody can see or end).
    """
    if "offline" in stored.unreadable:
        offline = previous.offline
    else:
        offline = frozenset(s for s in stored.offline if s in known)
    share = share_of(loads(stored.rollout))
    if share is not None and share.target not in known:
        share = None
    gen = stored.generation
    problems = stored.problems
    if stored.active is None:
        return replace(
            previous,
            offline=offline,
            refused=None,
            rollout=share,
            generation=gen,
            problems=problems,
        )
    if (
        stored.active in known
        and stored.active == previous.active
        and stored.active in offline
        and stored.offline_forced != stored.active
        and "offline_forced" not in stored.unreadable
    ):
        refused = previous.refused
        if refused is None or (refused.value, refused.reason) != (
            stored.active,
            REFUSED_OFFLINE_MARK,
        ):
            refused = Refusal(stored.active, now, REFUSED_OFFLINE_MARK)
        marks = offline - {stored.active}
        return Snapshot(stored.active, marks, refused, share, gen, problems)
    if stored.active in known and (
        stored.active not in offline or stored.active == previous.active
    ):
        return Snapshot(stored.active, offline, None, share, gen, problems)
    reason = REFUSED_OFFLINE if stored.active in known else REFUSED_UNKNOWN
    refused = previous.refused
    if refused is None or refused.value != stored.active or refused.reason != reason:
        refused = Refusal(value=stored.active, since=now, reason=reason)
    return Snapshot(previous.active, offline, refused, share, gen, problems)


Listener = Callable[[Snapshot, Snapshot], None]


@dataclass
class StateHolder:
    """The current snapshot plus the health of the link to the store."""

    current: Snapshot
    synced: bool = False
    degraded: bool = False
    last_error: str = ""  # for logs and authenticated surfaces: names the Redis endpoint
    # For /readyz, which answers anyone: what is wrong, never where Redis is (issue 25).
    public_error: str = ""
    degraded_since: float | None = None
    last_sync: float | None = None
    epoch: str | None = None  # the store's epoch this instance last saw (keys.Keys.epoch)
    # Listeners, the one style of the code base: a list of callables, subscribed with
    # append and removed with remove, called in order on every change.
    listeners: list[Listener] = field(default_factory=list)
    health_listeners: list[Callable[[bool], None]] = field(default_factory=list)

    def apply(self, snapshot: Snapshot) -> bool:
        """Swap in `snapshot` if it differs; tell listeners. Returns whether it changed."""
        previous = self.current
        if snapshot == previous:
            return False
        self.current = snapshot
        for listener in self.listeners:
            try:
                listener(previous, snapshot)
            except Exception:  # a broken listener must never stop routing
                log.exception("state listener %r failed", listener)
        return True

    def set_degraded(self, degraded: bool, error: str = "", public: str = "") -> None:
        changed = degraded != self.degraded
        self.degraded = degraded
        self.last_error = error
        self.public_error = public or ("redis unreachable" if error else "")
        if degraded and changed:
            self.degraded_since = time.time()
        if not degraded:
            self.degraded_since = None
        if changed:
            for listener in self.health_listeners:
                listener(degraded)


def public_error(exc: StoreUnavailable) -> str:
    """What an unauthenticated caller may learn of a store failure: a key of the wrong type is
    named (Redis is up, an operator must repair it), an outage is "redis unreachable"; the
    host, port and user stay in the log and behind the admin credential."""
    if isinstance(exc, WrongKeyType) and exc.key:
        return f"redis key {exc.key} holds the wrong type of value"
    if isinstance(exc, WrongKeyType):
        return "a token-router key in redis holds the wrong type of value"
    return "redis unreachable"


class Backoff:
    """Capped exponential backoff: 0.05 s, 0.1 s, ... up to `cap`."""

    def __init__(self, cap: float, initial: float = 0.05) -> None:
        self.cap = cap
        self.initial = initial
        self.delay = initial

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.initial


def _raise_if_cancel_lost() -> None:
    """Honour a cancel that was requested but swallowed on the way.

    Python 3.11's `asyncio.wait_for` (used inside redis-py for every command it sends) drops
    a cancel that lands just as its inner call completes; the task keeps `cancelling() > 0`
    and would otherwise loop for ever, hanging the router's shutdown.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def new_epoch(now: float) -> str:
    return f"{secrets.token_hex(8)}:{now:.3f}"


class StateWatcher:
    """The one background task that follows the store. Run it with `run()` in a task."""

    def __init__(
        self,
        store: StateStore,
        holder: StateHolder,
        known: Sequence[str],
        *,
        instance: str,
        resync_interval: float,
        retry_max: float,
    ) -> None:
        self.store = store
        self.holder = holder
        self.known = tuple(known)
        self.instance = instance
        self.resync_interval = resync_interval
        self.backoff = Backoff(retry_max)
        self.recovered: list[Callable[[], object]] = []
        # Called after the store was found to have lost its state (epoch changed) and the
        # active system was put back: write back what this instance holds (recovery.py).
        self.lost: list[Callable[[], object]] = []
        self._lock = asyncio.Lock()
        self._seeded = False
        # True from a change being applied until its audit entry is written (read by tests
        # that check the audit, which is written one round trip after routing moved).
        self.audit_pending = False
        # The same for a change of the offline set (a bare SADD/SREM is audited once too).
        self.offline_audit_pending = False
        # Whole syncs completed, audit included: "every instance re-read since" for tests.
        self.syncs = 0
        # The rollout document last read (raw), put back if Redis loses it (recovery.py).
        self._rollout: str | None = None

    def _keyspace_note(self) -> str:
        return str(getattr(self.store, "keyspace_note", "") or "")

    async def nudge(self) -> None:
        """Re-read now (after this instance wrote a change); store errors are left to run()."""
        with contextlib.suppress(StoreUnavailable):
            await self.sync()

    async def sync(self) -> None:
        """Re-read the store and apply what it holds; raises StoreUnavailable."""
        async with self._lock:
            await self._sync()

    def _rollout_back(self, known_epoch: str | None, epoch: str | None) -> RolloutRestore | None:
        """The running rollout this instance last read, to put back into a Redis that lost
        it (issue 25: the share silently dropped to 0 after an empty restart)."""
        r = loads(self._rollout)
        if r is None or not r.running or self._rollout is None:
            return None
        return RolloutRestore(
            self._rollout,
            f"recovery ({self.instance})",
            r.source,
            r.target,
            f"Redis lost its state (epoch {known_epoch} -> {epoch}); the rollout "
            f"({r.state}, step {r.step + 1}/{len(r.steps)}, {r.percent} %) put back as "
            f"{self.instance} last read it; this step's counts start again",
        )

    async def _restore(self, stored: StoredState) -> tuple[StoredState, bool, str | None]:
        """Put back what an empty or lost store misses; (state re-read, lost, known epoch)."""
        known_epoch = self.holder.epoch
        # An epoch marker, not guesswork: a value this instance saw is gone or replaced only
        # when Redis lost its data (restart without persistence, a new server, FLUSHALL).
        # One that cannot be read (another kind of key) says nothing either way.
        epoch_known = "epoch" not in stored.unreadable
        lost = epoch_known and known_epoch is not None and stored.epoch != known_epoch
        if lost:
            # First, so nobody reads the half-restored counts as the truth (recovery.py).
            await self.store.mark_restoring(time.time())
        if (stored.epoch is None and epoch_known) or stored.active is None or lost:
            current = self.holder.current
            epoch = new_epoch(time.time())
            # Put back the system we were routing to (our last known state, not a default;
            # it also replaces a default that a router with no state seeded meanwhile), so
            # all instances agree again; offline marks and the rollout only when the state
            # was lost.
            found, seeded = await self.store.restore(
                epoch,
                current.active if stored.active is None or lost else "",
                sorted(current.offline) if lost else (),
                known=known_epoch is not None,
                rollout=self._rollout_back(known_epoch, stored.epoch or epoch) if lost else None,
            )
            self._seeded = self._seeded or seeded
            stored = await self.store.read_state()
        return stored, lost, known_epoch

    def _report(self, previous: Snapshot, snapshot: Snapshot) -> None:
        """Log what is new in `snapshot`: unusable keys, fixed keys, a refused value."""
        for problem in snapshot.problems:
            if problem not in previous.problems:
                log.error("%s", problem.message)
        for problem in previous.problems:
            if problem.key not in {p.key for p in snapshot.problems}:
                log.warning("Redis key %r is usable again", problem.key)
        if snapshot.refused is not None and snapshot.refused != previous.refused:
            log.error(
                "refused active value %r: it %s (configured: %s; offline: %s); "
                "still routing new sessions to %r",
                snapshot.refused.value,
                snapshot.refused.describe(),
                ", ".join(self.known),
                ", ".join(sorted(snapshot.offline)) or "none",
                snapshot.active,
            )

    async def _sync(self) -> None:
        stored, lost, known_epoch = await self._restore(await self.store.read_state())
        previous = basis = self.holder.current
        if not self.holder.synced and stored.recorded in self.known:
            # Not synced yet: the fleet routes on the last value it recorded, not on this
            # process's default; a refused value must not split a newcomer off from it.
            basis = replace(previous, active=str(stored.recorded))
        snapshot = build_snapshot(stored, self.known, basis, time.time())
        changed = self.holder.apply(snapshot)
        self._report(previous, snapshot)
        if "rollout" not in stored.unreadable:
            self._rollout = stored.rollout
        # Routing follows the snapshot since apply() above, so /readyz and metrics must say
        # "synced" in the same step (not after the audit's round trip below); the epoch is
        # known from now on too.
        first = not self.holder.synced
        self.holder.synced = True
        self.holder.last_sync = time.time()
        if "epoch" not in stored.unreadable:
            self.holder.epoch = stored.epoch
        if lost:
            log.warning(
                "state store %s lost its state (epoch %s -> %s): active %r put back; writing "
                "back affinity, open counts and releases this instance holds",
                self.store.description,
                known_epoch,
                stored.epoch,
                self.holder.current.active,
            )
            for callback in self.lost:
                callback()
        # A re-seed after Redis came back empty changes nothing locally but is recorded now,
        # else the next switch would be audited with the seed's source and a lost "from".
        if changed or self._seeded or first:
            self.audit_pending = True
        if self.audit_pending:
            # Exactly-once audit of whatever changed the active key (a bare SET included);
            # kept due until written, so an audit that fails is retried on the next sync.
            source = f"external (seen by {self.instance})"
            if self._seeded:
                source = f"seed (no active value in the store; {self.instance} wrote its own)"
            # A refused value is not a switch: only systems routing may go to count as known.
            routable = [s for s in self.known if s not in snapshot.offline or s == snapshot.active]
            await self.store.record_observed(source, routable)
            self.audit_pending = False
            self._seeded = False
        if first or snapshot.offline != previous.offline:
            self.offline_audit_pending = True
        if self.offline_audit_pending:
            await self.store.record_offline_observed(
                f"external (seen by {self.instance})", snapshot.active, self.known
            )
            self.offline_audit_pending = False
        self.syncs += 1

    async def run(self) -> None:
        while True:
            _raise_if_cancel_lost()
            try:
                async for change in self.store.changes(self.resync_interval):
                    _raise_if_cancel_lost()
                    await self.sync()
                    if change == "subscribed" and self.holder.degraded:
                        log.warning("state store %s is back; state re-read", self.store.description)
                        self.holder.set_degraded(False)
                        for callback in self.recovered:
                            callback()
                    elif change == "subscribed" and (note := self._keyspace_note()):
                        log.warning(
                            "%s; bare SETs propagate within resync_interval (%.2f s)",
                            note,
                            self.resync_interval,
                        )
                    self.backoff.reset()
            except StoreUnavailable as exc:
                delay = self.backoff.next()
                if not self.holder.degraded:
                    log.error(
                        "%s; routing stays on %r (fail-static) until it returns",
                        exc,
                        self.holder.current.active,
                    )
                else:
                    log.warning("%s; retrying in %.2f s", exc, delay)
                self.holder.set_degraded(True, str(exc), public_error(exc))
                await asyncio.sleep(delay)
            except Exception as exc:
                # A bug, never a reason to stop following the store for good: the watcher
                # ending silently is what froze every router on a bad value (issue 25).
                delay = self.backoff.next()
                log.exception("state watcher failed; retrying in %.2f s", delay)
                self.holder.set_degraded(True, f"state watcher failed: {exc!r}")
                await asyncio.sleep(delay)
