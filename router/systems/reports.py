"""What the router reports about each system: the drain decision (router/systems/drain.py) over the
counts one gatherer reads, shared by `/api/status`, the admin page, `/metrics` and
`token-router status` / `drain-wait`, so they can never tell an operator different stories.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.config import Config
from router.errors import StoreUnavailable
from router.state.recovery import counts_unknown_reason
from router.state.snapshot import Snapshot
from router.state.store import AuditEntry, StateStore
from router.state.watch import Watch
from router.systems.drain import Drain, DrainFacts, DrainHistory, Sample, deciding_count
from router.systems.view import Observed, View, build, rollout_share

Probes = Mapping[str, tuple[int | None, str]]


@dataclass(frozen=True, slots=True)
class SystemReport:
    id: str
    drain: Drain
    gateway: str
    public_url: str
    version: str

    @property
    def state(self) -> str:
        return self.drain.state

    @property
    def open(self) -> int | None:
        return self.drain.open

    def to_json(self) -> dict[str, Any]:
        doc = self.drain.to_json()
        del doc["system"]
        return {
            "id": self.id,
            **doc,
            "gateway": self.gateway,
            "public_url": self.public_url,
            "version": self.version or None,
        }


async def read_counts(
    store: StateStore, systems: tuple[str, ...]
) -> tuple[dict[str, int] | None, frozenset[str], str]:
    """Open items and previewed systems from the store; (None, {}, error) when it is away."""
    try:
        now = time.time()
        stored = await store.read_state()
        counts = await store.open_counts(systems, now)
        previewing = await store.previewing(systems)
    except StoreUnavailable as exc:
        return None, frozenset(), str(exc)
    # Right after Redis came back empty the counts miss what has not been written back
    # yet: unknown, never "drained".
    reason = counts_unknown_reason(stored, now)
    if reason:
        return None, previewing, reason
    return counts, previewing, ""


def reports(
    config: Config,
    snapshot: Snapshot,
    counts: Mapping[str, int] | None,
    previewing: frozenset[str],
    probes: Probes | None = None,
    history: DrainHistory | None = None,
    now: float | None = None,
) -> list[SystemReport]:
    """Every system's report (the rows of `view_report`)."""
    return view_report(config, snapshot, counts, previewing, probes, history, now)[1]


def view_report(
    config: Config,
    snapshot: Snapshot,
    counts: Mapping[str, int] | None,
    previewing: frozenset[str],
    probes: Probes | None = None,
    history: DrainHistory | None = None,
    now: float | None = None,
    watch: Watch | None = None,
) -> tuple[View, list[SystemReport]]:
    """The view model (router/systems/view.py) of what was read, and every system's report in it.

    `counts` are the routers' open items (None: the store did not answer), `probes` the
    gateways' own counts for systems with a stats_url; `history`, when given, receives the
    deciding counts and yields the trend.
    """
    now = time.time() if now is None else now
    probes = probes or {}
    observed = []
    for sid, system in config.systems.items():
        gateway_open, gateway_error = probes.get(sid, (None, ""))
        observed.append(
            Observed(
                system=sid,
                router_open=None if counts is None else counts.get(sid, 0),
                stats_configured=bool(system.stats_url),
                gateway_open=gateway_open,
                gateway_error=gateway_error,
                previewing=sid in previewing,
            )
        )
    samples: dict[str, list[Sample]] = {}
    share = rollout_share(snapshot)
    receiving = {snapshot.active} | ({share.target} if share is not None else set())
    if history is not None:
        for o in observed:
            count, _ = deciding_count(
                DrainFacts(
                    o.system,
                    router_open=o.router_open,
                    stats_configured=o.stats_configured,
                    gateway_open=o.gateway_open,
                )
            )
            history.add(o.system, now, count, receiving=o.system in receiving)
            samples[o.system] = history.samples(o.system)
    v = build(snapshot, observed, samples, now, config.router.drain_stall_after, watch)
    rows = [
        SystemReport(
            id=sid,
            drain=v.system(sid),
            gateway=system.gateway,
            public_url=system.public_url,
            version=system.version,
        )
        for sid, system in config.systems.items()
    ]
    return v, rows


def audit_json(entries: list[AuditEntry]) -> list[dict[str, Any]]:
    return [entry.to_json() for entry in entries]


async def open_items_view(
    store: StateStore, config: Config, system: str, limit: int, now: float | None = None
) -> dict[str, Any]:
    """What holds `system` as the routers know it: how many items, and the oldest `limit`
    with their age and the instance that issued them (for `open-items`, the API, and the
    advice of a drain that does not end). Raises StoreUnavailable."""
    now = time.time() if now is None else now
    total, items = await store.open_items(system, now, limit)
    r = config.router
    counted = {"session": r.affinity_ttl, "code": r.shortcode_ttl}
    rows = []
    for item in items:
        # Written before issuers were recorded (or replayed from a cache): from its expiry.
        issued = item.issued or item.expires - counted.get(item.kind, r.affinity_ttl)
        rows.append({**item.to_json(), "age": round(max(0.0, now - issued), 1)})
    rows.sort(key=lambda row: -float(row["age"]))
    return {"system": system, "total": total, "items": rows}
