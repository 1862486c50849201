"""Redis back empty: what the routers put back, and when counts can be trusted again.

The state watcher (state.py) notices lost state by the epoch marker (`<prefix>:epoch`, one
random value per Redis lifetime): an instance that saw one value and finds none, or another,
knows Redis lost its data. It puts the active system back from its own snapshot at once;
then `write_back` here restores what the instance holds: every affinity record it wrote
(with the open-count lifetime left) or learned, and every release in its on-disk archive
(archive.py). Every instance does the same, so the union of what they hold comes back.

Until the instances have written back (`RESTORE_GRACE` seconds after the first of them found
the state lost and marked `<prefix>:epoch:restoring`) the routers' open counts are
incomplete: they are reported as unknown, never as "drained".
"""

from __future__ import annotations

import logging
from typing import Protocol

from router.errors import StoreUnavailable
from router.state.affinity import Affinity
from router.state.store import StateStore, StoredState


class Restorer(Protocol):
    """What puts releases back (releases/archiver.py `Archiver.restore`)."""

    async def restore(self) -> int: ...


log = logging.getLogger("router.recovery")

# Seconds after a new epoch began during which the routers' counts are not trusted: every
# instance notices the new epoch within resync_interval and writes back in milliseconds.
RESTORE_GRACE = 5.0


def counts_unknown_reason(stored: StoredState, now: float, grace: float = RESTORE_GRACE) -> str:
    """Why the routers' open counts cannot decide drain right now, or "" when they can."""
    since = stored.restoring
    if stored.epoch is None and stored.active is None:
        # Empty: lost, and no router has put it back yet (a brand-new Redis no router ever
        # used has nothing open anyway, and the first router to start fills it at once).
        return "Redis holds no token-router state (lost or new); the routers are restoring it"
    if since is not None and 0 <= now - since < grace:
        return (
            f"Redis lost its state {now - since:.1f} s ago; the routers are writing back what "
            f"they hold (counts known within {grace:g} s)"
        )
    return ""


def persistence_risk(mode: str, description: str) -> str:
    """The warning an operator sees at start and on the page, or "" when there is none."""
    if mode == "none":
        return (
            f"Redis at {description} has no persistence (appendonly no, no save points): a "
            "restart loses the active system, affinity, open counts and releases; the routers "
            "put back what they hold, but run Redis with appendonly yes (see compose.yaml)"
        )
    if mode == "unknown":
        return (
            f"Redis at {description} does not say whether it persists its data (CONFIG GET "
            "refused): make sure it does (appendonly yes)"
        )
    return ""


async def check_persistence(store: StateStore, known: str) -> str:
    """How the store persists its data, read now (at start and when it returns); the risk is
    logged once per change of it. The page shows it and its risk."""
    mode = await store.persistence()
    if mode != known:
        risk = persistence_risk(mode, store.description)
        if risk:
            log.warning("%s", risk)
    return mode


async def write_back(affinity: Affinity, releases: Restorer) -> bool:
    """Everything this instance holds back into a store that lost it. Never raises; False
    when it must be tried again (the runtime does so when the store answers again)."""
    try:
        records = await affinity.write_back()
        replayed = await affinity.replay()
        restored = await releases.restore()
    except StoreUnavailable as exc:
        log.error("write-back after lost state failed: %s; it is retried when Redis returns", exc)
        return False
    except Exception:
        log.exception("write-back after lost state failed unexpectedly")
        return False
    log.warning(
        "wrote back %d affinity record(s) (+%d kept while Redis was away) and %d release(s)",
        records,
        replayed,
        restored,
    )
    return True
