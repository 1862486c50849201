"""What the router reports about each system: one pure function for the state word, one
gatherer that reads the counts, shared by `/api/status`, the admin page and `token-router
status` so they can never tell an operator different stories.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.config import Config
from router.errors import StoreUnavailable
from router.state import Snapshot
from router.store import AuditEntry, StateStore

STATES = ("active", "draining", "drained", "offline", "preview")


def system_state(system: str, snapshot: Snapshot, open_items: int | None, previewing: bool) -> str:
    """The one word an operator needs for a system.

    offline wins (nothing reaches it); then active (new sessions go there); an idle system
    that is being tested through the preview header is "preview"; otherwise an idle system is
    "draining" while it still holds sessions or short codes the router issued, else "drained".
    An unknown count (store away) is reported as draining: never claim "safe to upgrade"
    without evidence.
    """
    if snapshot.is_offline(system):
        return "offline"
    if system == snapshot.active:
        return "active"
    if previewing:
        return "preview"
    if open_items is None or open_items > 0:
        return "draining"
    return "drained"


@dataclass(frozen=True, slots=True)
class SystemReport:
    id: str
    state: str
    open: int | None
    gateway: str
    public_url: str
    version: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "open": self.open,
            "gateway": self.gateway,
            "public_url": self.public_url,
            "version": self.version or None,
        }


async def read_counts(
    store: StateStore, systems: tuple[str, ...]
) -> tuple[dict[str, int] | None, frozenset[str], str]:
    """Open items and previewed systems from the store; (None, {}, error) when it is away."""
    try:
        counts = await store.open_counts(systems, time.time())
        previewing = await store.previewing(systems)
    except StoreUnavailable as exc:
        return None, frozenset(), str(exc)
    return counts, previewing, ""


def merge_probes(
    counts: Mapping[str, int] | None, probes: Mapping[str, tuple[int | None, str]]
) -> dict[str, int | None] | None:
    """Combine the router's counts with the gateways' own (stats_url).

    The gateway may know sessions the router did not issue, so the larger count wins; a
    failed probe makes the count unknown: never report "drained" without evidence.
    """
    if counts is None:
        return None
    merged: dict[str, int | None] = dict(counts)
    for sid, (count, _) in probes.items():
        merged[sid] = None if count is None else max(merged.get(sid) or 0, count)
    return merged


def reports(
    config: Config,
    snapshot: Snapshot,
    counts: Mapping[str, int | None] | None,
    previewing: frozenset[str],
) -> list[SystemReport]:
    out = []
    for sid, system in config.systems.items():
        open_items = None if counts is None else counts.get(sid, 0)
        out.append(
            SystemReport(
                id=sid,
                state=system_state(sid, snapshot, open_items, sid in previewing),
                open=open_items,
                gateway=system.gateway,
                public_url=system.public_url,
                version=system.version,
            )
        )
    return out


def audit_json(entries: list[AuditEntry]) -> list[dict[str, Any]]:
    return [entry.to_json() for entry in entries]
