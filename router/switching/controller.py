"""The rollout controller: the routers themselves drive rollouts, never the CLI process.

Every instance runs this loop every `rollout_tick` seconds:
1. it adds the token requests and failures it served since the last tick to the shared
   counts of the current rollout step (taken from the metrics' own counters: nothing is
   added to the request path);
2. it takes or renews the leader lock (`SET NX PX` / renew-if-ours, `leader_ttl`); only the
   holder goes on. When the leader dies, its lock expires and the next instance to tick
   takes over: the rollout continues;
3. the leader reads the rollout, the step's counts (all instances) and a fresh probe of the
   target, asks `rollout.next_action`, and applies the answer through operations.py: an
   advance or abort is a compare-and-set of the document, the promotion is a switch with
   `expect` = the system it rolls away from. A compare-and-set that fails means someone
   else changed the rollout meanwhile; the next tick looks again. So every transition is
   written, and audited, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

from router.config import Config
from router.errors import Conflict, RouterError, StoreUnavailable
from router.proxy.routing import Route
from router.state import rollout as model
from router.state import watch
from router.state.snapshot import Snapshot, StateHolder
from router.state.store import StateStore
from router.switching import operations
from router.switching.gates import Gates
from router.switching.ledger import BOUNDS, Ledger

log = logging.getLogger("router.rollout")

TOKEN_ROUTE = Route.TOKEN_CREATE.value


def token_totals(local: Counter[tuple[str, str, int]]) -> dict[str, tuple[int, int]]:
    """(token requests, failed ones) per system: 5xx answers and the router's own 502/504
    (status 0 in the counters: the gateway gave no answer)."""
    out: dict[str, tuple[int, int]] = {}
    for (route, system, status), n in list(local.items()):
        if route != TOKEN_ROUTE:
            continue
        requests, failures = out.get(system, (0, 0))
        failed = status == 0 or status >= 500
        out[system] = (requests + n, failures + (n if failed else 0))
    return out


def deltas(
    now: dict[str, tuple[int, int]], before: dict[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    out = {}
    for system, (requests, failures) in now.items():
        r0, f0 = before.get(system, (0, 0))
        if requests - r0 or failures - f0:
            out[system] = (requests - r0, failures - f0)
    return out


def _step(snapshot: Snapshot) -> tuple[str, int] | None:
    share = snapshot.rollout
    return None if share is None else (share.rollout_id, share.step)


class RolloutController:
    def __init__(
        self,
        store: StateStore,
        holder: StateHolder,
        config: Config,
        gates: Gates,
        local: Counter[tuple[str, str, int]],
        *,
        instance: str,
    ) -> None:
        self.store = store
        self.holder = holder
        self.config = config
        self.gates = gates
        self.local = local
        self.instance = instance
        self.tick = config.router.rollout_tick
        self.ttl = config.router.leader_ttl
        self.leading = False
        # The step being counted, this instance's totals when it began (or were last sent),
        # and counts of finished steps not sent yet. Switched in the state listener, at the
        # moment the new snapshot starts deciding requests: each request counts for the step
        # whose share routed it.
        self._counting: tuple[str, int] | None = None
        self._counted = token_totals(local)
        self._pending: list[tuple[tuple[str, int], dict[str, tuple[int, int]]]] = []
        # The traffic ledger (switching/ledger.py): the step's latencies, every instance's.
        self.ledger: Ledger | None = None

    def on_snapshot(self, previous: Snapshot, current: Snapshot) -> None:
        """A state listener (wiring.py): switch the counted step as the new state applies."""
        step = _step(current)
        if step == self._counting:
            return
        totals = token_totals(self.local)
        if self._counting is not None:
            changed = deltas(totals, self._counted)
            if changed:
                self._pending.append((self._counting, changed))
        self._counting, self._counted = step, totals

    @property
    def source(self) -> str:
        return f"rollout controller ({self.instance})"

    async def flush_counts(self) -> None:
        """Add this instance's token requests since the last flush to their steps' counts."""
        while self._pending:
            (rollout_id, step), changed = self._pending[0]
            await self.store.add_rollout_counts(rollout_id, step, changed)
            self._pending.pop(0)
        if self._counting is None:
            return
        totals = token_totals(self.local)
        changed = deltas(totals, self._counted)
        if changed:
            await self.store.add_rollout_counts(*self._counting, changed)
        self._counted = totals

    async def step(self) -> None:
        """One tick: count, lead, decide."""
        await self.flush_counts()
        was = self.leading
        self.leading = await self.store.hold_leader(self.instance, self.ttl)
        if self.leading and not was:
            log.info("this instance (%s) now drives rollouts", self.instance)
        if self.leading:
            await self.drive()

    async def drive(self) -> None:
        raw = (await self.store.read_state()).rollout
        r = model.loads(raw)
        if r is None or not r.running or raw is None:
            return
        counts = await self.store.rollout_counts(r.id, r.step)
        probe = await self.gates.prober.fresh(r.target, max_age=self.tick)
        now = time.time()
        traffic = await self.step_traffic(r, now)
        action = model.next_action(
            r, now, counts, None if probe.ok else probe.error, traffic, BOUNDS
        )
        if action is None:
            return
        try:
            if action.kind == "abort":
                await operations.abort_rollout(
                    self.store, source=self.source, reason=action.reason, expected=raw
                )
                log.warning("rollout to %s aborted: %s", r.target, action.reason)
            elif action.kind == "advance":
                new, _ = await operations.advance_rollout(
                    self.store, r, raw, source=self.source, reason=action.reason
                )
                log.info("rollout to %s: step %d, %d %%", r.target, new.step + 1, new.percent)
            else:
                await operations.promote_rollout(
                    self.store, self.config, self.gates, source=self.source, reason=action.reason
                )
                log.info("rollout to %s promoted: %s", r.target, action.reason)
        except Conflict as exc:
            log.info("rollout changed meanwhile (%s); looking again next tick", exc)

    async def step_traffic(self, r: model.Rollout, now: float) -> dict[str, watch.Traffic] | None:
        """The target's and the source's token requests in the step's newest seconds
        (`watch_span`, reaching back to the step's start for `min_requests`)."""
        if self.ledger is None or not (r.max_latency or r.latency_factor):
            return None
        start, end = int(r.step_started), int(now)
        slots = await self.ledger.read(start, end, now)
        span = max(1, int(self.config.router.watch_span))
        target, first = watch.recent(
            slots, r.target, start=start, now=end, span=span, min_requests=r.min_requests
        )
        return {r.target: target, r.source: watch.sum_slots(slots, r.source, first, end)}

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except StoreUnavailable as exc:
                self.leading = False
                log.debug("rollout controller paused: %s", exc)
            except RouterError as exc:
                log.warning("rollout controller: %s", exc)
            except Exception:
                # A bug, never a reason to stop for good: a controller that ended kept saying
                # it led, beside the instance that took the lock over (issue 25).
                log.exception("rollout controller failed; trying again next tick")
            await asyncio.sleep(self.tick)

    async def close(self) -> None:
        if self.leading:
            with contextlib.suppress(StoreUnavailable):
                await self.store.release_leader(self.instance)
        self.leading = False
