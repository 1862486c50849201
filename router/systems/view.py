"""What every surface shows about the systems, computed once: the view model.

`build` is the one pure function over one snapshot (the shared state as routing applies it,
plus what was read about each system at that moment and the samples of its count): the state
of each system (active, rollout target with its share, draining, stalled, drained, offline,
preview), the count and its source, the rate and the estimate (router/systems/drain.py), and the
headline ("new sessions go to a", or "rollout a -> b: 20 % of new sessions to b").

The page (templates/, static/admin.js), `/api/status`, `/api/live`, `token-router status` and
`--watch`, `drain-wait`, `upgrade` and `/metrics` render it and decide nothing themselves: the
words they show (`headline`, each system's `badge` and `estimate`) come from here, so they
cannot tell an operator different stories. A new part of the view (issue 28's watch after a
switch, say) is one more plain dataclass field of `View`, built here, rendered by each surface.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router.state import watch as watching
from router.state.snapshot import Snapshot
from router.systems.drain import DEFAULT_STALL_AFTER, Drain, DrainFacts, Sample, Trend, drain


@dataclass(frozen=True, slots=True)
class Observed:
    """What was read about one system at one moment, apart from the shared state."""

    system: str
    router_open: int | None = None  # the routers' count; None when the store did not answer
    stats_configured: bool = False
    gateway_open: int | None = None  # the gateway's own count (stats_url)
    gateway_error: str = ""
    previewing: bool = False


@dataclass(frozen=True, slots=True)
class RolloutShare:
    """A running (or paused) rollout as routing applies it: new sessions split two ways."""

    source: str  # the active system, which keeps the rest
    target: str
    percent: int

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "percent": self.percent}


@dataclass(frozen=True, slots=True)
class View:
    active: str
    rollout: RolloutShare | None
    systems: tuple[Drain, ...]
    # The post-switch watch of the last change of the active system (state/watch.py),
    # and the moment the view was built (its time left is counted from it).
    watch: watching.Watch | None = None
    at: float = 0.0

    @property
    def headline(self) -> str:
        """Where new sessions go, in the words every surface prints."""
        r = self.rollout
        if r is not None:
            return f"rollout {r.source} -> {r.target}: {r.percent} % of new sessions to {r.target}"
        return f"new sessions go to {self.active}"

    def system(self, system: str) -> Drain:
        return next(d for d in self.systems if d.system == system)

    def to_json(self) -> dict[str, Any]:
        """The view's own fields of a status document (each system's are Drain.to_json)."""
        return {
            "headline": self.headline,
            "rollout_share": None if self.rollout is None else self.rollout.to_json(),
            "watch": watching.view(self.watch, self.at, watching.LATENCY_BUCKETS),
        }


def rollout_share(snapshot: Snapshot) -> RolloutShare | None:
    share = snapshot.rollout
    if share is None or share.target == snapshot.active:
        return None
    return RolloutShare(snapshot.active, share.target, round(share.fraction * 100))


def build(
    snapshot: Snapshot,
    observed: Sequence[Observed],
    samples: Mapping[str, Sequence[Sample]],
    now: float,
    stall_after: float = DEFAULT_STALL_AFTER,
    watch: watching.Watch | None = None,
    measured: Mapping[str, Trend] | None = None,
) -> View:
    """The view of every system in `observed` (in that order) at `now`. `measured`: trends
    a sampling router computed (one-shot `status`), used instead of `samples` for its systems."""
    measured = measured or {}
    rollout = rollout_share(snapshot)
    systems = []
    for o in observed:
        active = o.system == snapshot.active
        target = rollout is not None and o.system == rollout.target
        if rollout is None:
            share = 100 if active else 0
        elif active:
            share = 100 - rollout.percent
        else:
            share = rollout.percent if target else 0
        facts = DrainFacts(
            system=o.system,
            active=active,
            offline=snapshot.is_offline(o.system),
            previewing=o.previewing,
            router_open=o.router_open,
            stats_configured=o.stats_configured,
            gateway_open=o.gateway_open,
            gateway_error=o.gateway_error,
            rollout_target=target,
            share=share,
        )
        systems.append(
            drain(facts, samples.get(o.system, ()), now, stall_after, measured.get(o.system))
        )
    return View(
        active=snapshot.active, rollout=rollout, systems=tuple(systems), watch=watch, at=now
    )


def fleet_summary(live: int, behind: Sequence[str]) -> str:
    """The router instances in the words of `status` and the page: which have not applied
    the current state, by name (a change is done only when every live instance applied it)."""
    if not behind:
        return f"{live} live, all on the current state"
    return f"{live} live, {len(behind)} not on the current state: {', '.join(behind)}"
