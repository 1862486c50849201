"""The post-switch watch, run by the routers themselves (never by the CLI process).

Every instance runs this loop every `rollout_tick` seconds:
1. it adds the token requests it served since the last tick to the traffic ledger
   (switching/ledger.py), so figures are counted across all instances;
2. it reads the watch document, for its own /metrics;
3. the instance holding the rollout controller's leader lock (rollout_driver.py) goes on:
   - it finds the newest change of the active system in the audit stream (a guarded
     switch, undo, promotion, an upgrade's switch, or a bare SET the routers recorded) and,
     when that change is not watched yet, starts a watch for it: the old system's figures
     from before the change are its baseline;
   - it judges the newest traffic to the new system (state/watch.py: `verdict`) and
     records the figures, so every instance and surface shows them;
   - on a breach it undoes the change through the same gates as `token-router undo` (the
     old system online and healthy), audited once as `auto-undo` with the evidence; when
     the gates refuse, or the old system was offline when the change was made, it undoes
     nothing and raises the alarm (audited `watch-alarm`, state `alarm`, the metric).
   Every write is a compare-and-set (the switch's `expect`, the watch document's), so two
   leaders for a moment can never both act. The watch's own undo starts no watch: after an
   automatic undo the router never switches forward again on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from router.config import Config, RouterConfig
from router.errors import Conflict, GateRefused, RouterError, StoreUnavailable
from router.state import watch as model
from router.state.store import AuditEntry, AuditFields, StateStore
from router.switching import operations
from router.switching.gates import Gates
from router.switching.ledger import BOUNDS, Ledger

log = logging.getLogger("router.watch")

# Audit entries read to find the newest change of the active system.
LOOKBACK = 50


def thresholds(r: RouterConfig) -> model.Thresholds:
    return model.Thresholds(
        max_error_rate=r.watch_max_error_rate,
        min_requests=r.watch_min_requests,
        max_latency=r.latency_max_p99,
        latency_factor=r.latency_factor,
        latency_floor=r.latency_floor,
    )


def retention(r: RouterConfig) -> int:
    """Seconds the ledger keeps: the baseline before a change, the watch after it, a step."""
    return int(2 * r.post_switch_watch + r.watch_span + 120)


def change_of(entry: AuditEntry) -> model.Change:
    return model.Change(
        entry.id, entry.action, entry.source, entry.from_, entry.to, entry.time, entry.reason
    )


class PostSwitchWatch:
    def __init__(
        self,
        store: StateStore,
        config: Config,
        gates: Gates,
        ledger: Ledger,
        *,
        instance: str,
        is_leader: Callable[[], bool],
    ) -> None:
        self.store = store
        self.config = config
        self.gates = gates
        self.ledger = ledger
        self.instance = instance
        self.is_leader = is_leader
        self.tick = config.router.rollout_tick
        self.window = config.router.post_switch_watch
        self.defaults = thresholds(config.router)
        # The last watch document this instance read (its /metrics and status answers).
        self.current: model.Watch | None = None
        self.ticks = 0  # completed ticks (tests wait on them, never on the clock)

    @property
    def source(self) -> str:
        return f"post-switch watch ({self.instance})"

    async def step(self) -> None:
        """One tick: count, read, and (as the leader) judge."""
        await self.ledger.flush()
        raw = await self.store.read_watch()
        self.current = model.loads(raw, self.defaults)
        if self.is_leader():
            await self.drive(raw, time.time())
        self.ticks += 1

    async def drive(self, raw: str | None, now: float) -> None:
        w = model.loads(raw, self.defaults)
        stored = await self.store.read_state()
        active = operations.snapshot_of(stored, self.config).active
        entries = await self.store.audit(LOOKBACK)
        change = model.last_change(change_of(e) for e in entries)
        if w is not None and w.watching and w.system != active:
            await self._overtaken(w, raw, change, active, now)
            return
        if model.should_watch(
            change, w, active=active, known=self.config.system_ids, window=self.window, now=now
        ):
            assert change is not None
            await self._start(change, raw, stored.offline, now)
            return
        if w is None or not w.watching:
            return
        slots = await self.ledger.read(int(w.started), int(now), now)
        current, first = model.recent(
            slots,
            w.system,
            start=int(w.started),
            now=int(now),
            span=max(1, int(w.span)),
            min_requests=w.thresholds.min_requests,
        )
        v = model.verdict(w, now, current, float(first), BOUNDS)
        if v is None:
            return
        measured = model.measured(w, current, float(first), now)
        try:
            if v.kind == "measure":
                await self.store.write_watch(raw, measured.dumps())
            elif v.kind == "pass":
                await self.store.write_watch(
                    raw, model.ended(measured, model.PASSED, now, v.evidence).dumps()
                )
                log.info("post-switch watch of %s passed: %s", w.system, v.evidence)
            elif v.kind == "undo":
                await self._undo(measured, raw, v.evidence, now)
            else:
                why = f"{v.evidence}; no undo: {w.previous} was offline when the switch was made"
                await self._alarm(measured, raw, why, now)
        except Conflict as exc:
            log.info("the watch changed meanwhile (%s); looking again next tick", exc)

    async def _start(
        self, change: model.Change, raw: str | None, offline: frozenset[str], now: float
    ) -> None:
        r = self.config.router
        # The old system's figures over as long before the change as the watch lasts after
        # it, within what the ledger still holds.
        began = max(change.time - self.window, now - retention(r))
        baseline = await self.ledger.span(change.from_, began, change.time)
        w = model.new_watch(
            change,
            window=self.window,
            span=r.watch_span,
            thresholds=self.defaults,
            previous_offline=change.from_ in offline,
            baseline=baseline,
            baseline_from=float(int(began)),
        )
        try:
            await self.store.write_watch(raw, w.dumps())
        except Conflict:
            return
        log.info(
            "watching %s for %g s after %s %s -> %s (baseline %s)",
            w.system,
            self.window,
            change.action,
            change.from_,
            change.to,
            model.describe(change.from_, baseline, BOUNDS),
        )

    async def _overtaken(
        self,
        w: model.Watch,
        raw: str | None,
        change: model.Change | None,
        active: str,
        now: float,
    ) -> None:
        """The active system changed under a running watch: its own undo whose record was
        not written (a leader that died between the two), or someone else's change."""
        try:
            if change is not None and change.action == model.AUTO_UNDO and change.from_ == w.system:
                await self.store.write_watch(
                    raw, model.ended(w, model.UNDONE, change.time, change.reason).dumps()
                )
            else:
                how = f"{change.action} by {change.source}" if change is not None else "a change"
                await self.store.write_watch(
                    raw, model.ended(w, model.ENDED, now, f"{active} became active ({how})").dumps()
                )
        except Conflict:
            return

    async def _undo(self, w: model.Watch, raw: str | None, evidence: str, now: float) -> None:
        try:
            outcome = await operations.switch(
                self.store,
                self.config,
                self.gates,
                w.previous,
                source=self.source,
                expect=w.system,
                reason=evidence,
                action=model.AUTO_UNDO,
            )
        except GateRefused as exc:
            if exc.gate == "expect":
                return  # someone changed the active system meanwhile: the next tick sees it
            await self._alarm(w, raw, f"{evidence}; no undo: {exc.message}", now)
            return
        log.error("post-switch watch undid %s -> %s: %s", w.previous, w.system, evidence)
        await self.store.write_watch(raw, model.ended(w, model.UNDONE, now, evidence).dumps())
        del outcome

    async def _alarm(self, w: model.Watch, raw: str | None, why: str, now: float) -> None:
        await self.store.write_watch(
            raw,
            model.ended(w, model.ALARM, now, why).dumps(),
            AuditFields(model.ALARM_ACTION, self.source, w.previous, w.system, why),
        )
        log.error("post-switch watch of %s: ALARM: %s", w.system, why)

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except StoreUnavailable as exc:
                log.debug("post-switch watch paused: %s", exc)
            except RouterError as exc:
                log.warning("post-switch watch: %s", exc)
            await asyncio.sleep(self.tick)
