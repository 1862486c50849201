"""Running an upgrade: the five steps, their output, the upgrade document and the audit.

`plan.decide` says what to run; this module does the I/O. Each step prints a line when it
starts and when it ends, with what it checked and measured, and writes one audit entry.
Whatever stops the procedure (Ctrl-C, a failed check, a drain timeout) leaves the upgrade
document `stopped` with the step it reached, so the next `token-router upgrade <target>`
resumes from the state in Redis, and prints how to resume or roll back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from router import interrupts
from router.config import Config
from router.errors import RouterError, StoreUnavailable, WrongKeyType
from router.state import rollout as rollouts
from router.state.snapshot import Snapshot, build_snapshot
from router.state.store import StateStore
from router.switching import operations
from router.switching.fleet import STALE_BEATS
from router.switching.gates import GateProber
from router.systems.drain import Drain, DrainHistory, describe
from router.systems.reports import read_counts, reports
from router.systems.stats import probe_all
from router.upgrade import checks
from router.upgrade.journal import Journal
from router.upgrade.plan import (
    EXIT_DONE,
    EXIT_DRAIN_TIMEOUT,
    EXIT_REFUSED,
    EXIT_ROLLED_BACK,
    STEP_TITLES,
    STEPS,
    Finished,
    Observed,
    Refuse,
    Request,
    RolloutFacts,
    Run,
    UpgradeRecord,
    decide,
    loads_record,
    next_steps,
    stop_advice,
    switch_plan,
)

# This build has progressive rollouts (issue 10): step 3 is one unless --steps 100.
ROLLOUTS = True
# How long step 3 waits for every router to route to the target before it fails.
PROPAGATION_BOUND = 10.0
HEARTBEAT = 1.0
# A Redis restart must not stop an upgrade: store calls are retried for this long.
STORE_PATIENCE = 15.0

Confirm = Callable[[str], Awaitable[bool]]
T = TypeVar("T")


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Options:
    target: str
    source: str  # who, for the audit: "cli (user@host)" or "drill"
    routers: tuple[str, ...]  # proxy URLs to check and smoke-test through
    steps: tuple[int, ...] = (5, 25, 50, 100)
    interval: float = 120.0
    drain_timeout: float = 3600.0
    drain_interval: float = 2.0
    offline_old: bool = False
    dry_run: bool = False
    yes: bool = False
    me: str = field(default_factory=this_process)
    config_hint: str = ""  # ` --config <path>` for the commands printed as next steps


@dataclass
class StepTiming:
    step: str
    seconds: float
    result: str  # ok | failed | timeout | stopped | declined
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "seconds": round(self.seconds, 3),
            "result": self.result,
            "detail": self.detail,
        }


class StepFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Procedure:
    """One run of `token-router upgrade` (or of the drill's upgrade)."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        journal: Journal,
        options: Options,
        *,
        out: Callable[[str], None],
        err: Callable[[str], None],
        confirm: Confirm | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.journal = journal
        self.options = options
        self.out = out
        self.err = err
        self.confirm = confirm
        self.timings: list[StepTiming] = []
        self.drain_seconds: float | None = None
        self.outcome = ""
        self.record: UpgradeRecord | None = None
        self._raw: str | None = None
        self._lock = asyncio.Lock()
        self._release = ""
        self.rolled_back = ""  # why the rollout aborted on its own, if it did
        self.prober = GateProber(config.systems)

    # --- the document ------------------------------------------------------------------------

    async def _patient(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, retried while Redis is briefly away (a restart, a failover)."""
        deadline = time.monotonic() + STORE_PATIENCE
        told = False
        while True:
            try:
                return await call()
            except StoreUnavailable as exc:
                if isinstance(exc, WrongKeyType) or time.monotonic() >= deadline:
                    raise  # a key of the wrong type is not transient: its fix is named
                if not told:
                    self.out(f"  ({what}: {exc}; retrying for up to {STORE_PATIENCE:g} s)")
                    told = True
                await asyncio.sleep(0.2)

    async def _observe(self) -> Observed:
        return await self._patient("reading the state", self._observe_once)

    async def _observe_once(self) -> Observed:
        stored = await self.store.read_state()
        known = self.config.system_ids
        fallback = stored.recorded if stored.recorded in known else self.config.default_system
        assert fallback is not None
        snapshot: Snapshot = build_snapshot(stored, known, Snapshot(active=fallback), time.time())
        self._raw = await self.journal.read()
        r = rollouts.loads(stored.rollout)
        facts = None
        if r is not None:
            facts = RolloutFacts(r.id, r.target, r.source, r.state, r.end_reason or "")
        return Observed(
            known=tuple(known),
            active=snapshot.active,
            offline=snapshot.offline,
            record=loads_record(self._raw),
            rollout=facts,
            now=time.time(),
        )

    async def _save(self, record: UpgradeRecord) -> None:
        async with self._lock:
            new = record.dumps()
            expected = self._raw
            written = await self._patient(
                "writing the upgrade document", lambda: self.journal.write(expected, new)
            )
            # A retried write whose first attempt landed finds its own value: that is success.
            raw = None if written else await self._patient("reading", self.journal.read)
            if not written and raw != new:
                current = loads_record(raw)
                who = current.owner if current is not None else "someone"
                raise StepFailed(
                    EXIT_REFUSED,
                    f"refused (gate: busy): the upgrade document changed meanwhile ({who} "
                    "wrote it); run the upgrade again to see the state",
                )
            self._raw = new
            self.record = record

    async def _update(self, **changes: Any) -> None:
        assert self.record is not None
        await self._save(replace(self.record, beat=time.time(), **changes))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            with contextlib.suppress(StoreUnavailable, StepFailed):
                await self._update()

    async def _audit(self, action: str, reason: str) -> None:
        assert self.record is not None
        record = self.record
        try:
            await self._patient(
                "auditing",
                lambda: self.journal.audit(
                    action, self.options.source, record.old, record.target, reason
                ),
            )
        except StoreUnavailable as exc:
            self.out(f"  (could not audit {action}: {exc})")

    # --- running -----------------------------------------------------------------------------

    async def run(self) -> int:
        try:
            return await self._run()
        finally:
            await self.prober.close()

    async def _run(self) -> int:
        opts = self.options
        obs = await self._observe()
        decision = decide(obs, Request(opts.target, opts.offline_old, opts.me))
        if isinstance(decision, Refuse):
            self.outcome = "refused"
            self.err(decision.message)
            return decision.code
        if isinstance(decision, Finished):
            self.outcome = "finished"
            (self.out if decision.code == EXIT_DONE else self.err)(decision.message)
            if decision.code == EXIT_DONE and obs.record is not None:
                self._next_steps(obs.record.old, obs.record.old in obs.offline)
            return decision.code
        self._print_plan(decision, obs)
        if opts.dry_run:
            return await self._dry_run(decision)
        now = time.time()
        record = decision.record or UpgradeRecord(
            id=f"{int(now)}-{os.getpid()}",
            target=opts.target,
            old=decision.old,
            offline_old=opts.offline_old,
            state="running",
            step=decision.steps[0],
            started=now,
            started_by=opts.source,
            owner=opts.me,
            beat=now,
        )
        await self._save(replace(record, state="running", owner=opts.me, beat=now, message=""))
        await self._audit(
            "upgrade-start" if decision.kind == "start" else "upgrade-resume", decision.note
        )
        beat = asyncio.create_task(self._heartbeat())
        step = decision.steps[0]
        try:
            for step in decision.steps:
                interrupts.check()  # a Ctrl-C lost during the last step: never begin the next
                await self._update(step=step)
                await self._step(step)
        except StepFailed as exc:
            beat.cancel()
            if exc.code == EXIT_ROLLED_BACK:
                await self._rolled_back(str(exc))
                return exc.code
            how = "timeout" if exc.code == EXIT_DRAIN_TIMEOUT else "failed"
            await self._stop(step, how, str(exc))
            return exc.code
        except (asyncio.CancelledError, KeyboardInterrupt):
            beat.cancel()
            await self._stop(step, "stopped", "interrupted (Ctrl-C)")
            raise
        except RouterError as exc:
            beat.cancel()
            await self._stop(step, "failed", str(exc))
            return EXIT_REFUSED
        beat.cancel()
        await self._update(state="done", step=decision.steps[-1])
        await self._audit(
            "upgrade-done", f"{self.record.old if self.record else ''} -> {opts.target}"
        )
        self.outcome = "done"
        assert self.record is not None
        self.out(
            f"upgrade done: new sessions go to {opts.target}; {self.record.old} "
            + ("is offline for its own upgrade" if self.record.offline_old else "is drained")
        )
        self._next_steps(self.record.old, self.record.offline_old)
        return EXIT_DONE

    def _next_steps(self, old: str, old_offline: bool) -> None:
        for line in next_steps(old, self.options.target, old_offline, self.options.config_hint):
            self.out(line)

    def _print_plan(self, decision: Run, obs: Observed) -> None:
        opts = self.options
        self.out(decision.note)
        shown = [f"{STEPS.index(s) + 1}. {STEP_TITLES[s]}" for s in decision.steps]
        self.out("plan: " + "; ".join(shown))
        if "switch" in decision.steps:
            self.out(f"  step 3 will {switch_plan(opts.steps, opts.interval, ROLLOUTS)}")
        if "drain" in decision.steps:
            self.out(
                f"  step 4 waits up to {opts.drain_timeout:g} s for {decision.old} to hold no calls"
            )

    async def _dry_run(self, decision: Run) -> int:
        self.outcome = "dry-run"
        opts = self.options
        failed = False
        if "preflight" in decision.steps:
            self.out("step 1/5 preflight (dry run: nothing is written)")
            for check in await self._preflight_checks(store_new=False):
                self.out("  " + check.line())
                failed |= not check.ok
            self.out("step 2/5 preview smoke test (dry run)")
            self.out(
                f"  [skip] preview token: a real run mints one on {opts.target} and deletes it"
            )
            if self._release and opts.routers:
                async with _client_session() as session:
                    check = await checks._library_check(
                        session, self.config.systems[opts.target], opts.routers[0], self._release
                    )
                self.out("  " + check.line())
                failed |= not check.ok
        if failed:
            self.err("dry run: a check failed; the upgrade would stop at it")
            return EXIT_REFUSED
        self.out("dry run: every check passed; nothing was changed")
        return EXIT_DONE

    async def _step(self, step: str) -> None:
        number = STEPS.index(step) + 1
        self.out(f"step {number}/5 {STEP_TITLES[step]}: started")
        started = time.monotonic()
        try:
            detail = await getattr(self, f"_step_{step}")()
        except StepFailed as exc:
            seconds = time.monotonic() - started
            result = {EXIT_DRAIN_TIMEOUT: "timeout", EXIT_ROLLED_BACK: "aborted"}.get(
                exc.code, "failed"
            )
            self.timings.append(StepTiming(step, seconds, result, str(exc)))
            self.out(f"step {number}/5 {STEP_TITLES[step]}: {result.upper()} after {seconds:.1f} s")
            await self._audit(f"upgrade-{step}", f"{result}: {exc}")
            raise
        seconds = time.monotonic() - started
        self.timings.append(StepTiming(step, seconds, "ok", detail))
        self.out(f"step {number}/5 {STEP_TITLES[step]}: ok in {seconds:.1f} s ({detail})")
        await self._audit(f"upgrade-{step}", f"ok in {seconds:.1f} s: {detail}")

    async def _rolled_back(self, why: str) -> None:
        """The rollout aborted on its own: final, the old system stays active."""
        self.outcome = "rolled-back"
        self.rolled_back = why
        with contextlib.suppress(StoreUnavailable, StepFailed):
            await self._update(state="rolled-back", step="switch", message=why)
        with contextlib.suppress(StoreUnavailable):
            await self._audit("upgrade-rolled-back", why)
        if self.record is not None:
            self.err(f"upgrade rolled back: the rollout aborted: {why}")
            self.err(
                f"  {self.record.old} stays active; fix {self.record.target} and run "
                f"`token-router upgrade {self.record.target}` again"
            )

    async def _stop(self, step: str, how: str, why: str) -> None:
        self.outcome = how
        state = "stopped"
        with contextlib.suppress(StoreUnavailable, StepFailed):
            await self._update(state=state, step=step, message=why)
        with contextlib.suppress(StoreUnavailable):
            await self._audit("upgrade-stopped", f"at {step}: {why}")
        if self.record is not None:
            self.err(f"upgrade stopped at step {STEPS.index(step) + 1} ({step}): {why}")
            for line in stop_advice(self.record, step, ROLLOUTS, self.options.config_hint):
                self.err(f"  {line}")

    # --- the steps ---------------------------------------------------------------------------

    async def _preflight_checks(self, *, store_new: bool) -> list[checks.Check]:
        opts = self.options
        system = self.config.systems[opts.target]
        stored = await self._patient("reading the state", self.store.read_state)
        found: list[checks.Check] = [
            checks.Check(
                "target configured and online",
                opts.target not in stored.offline,
                f"{opts.target}: gateway {system.gateway}, public_url {system.public_url}",
            )
        ]
        found.append(await checks.gateway_health(system))
        if self.config.router.redis_url.startswith("memory://"):
            release_check = await checks.release_via_router(self.config, opts.target, opts.routers)
            self._release = release_check[1]
            found.append(release_check[0])
        else:
            check, self._release = await self._patient(
                "checking the release",
                lambda: checks.release_stored(self.config, opts.target, store_new=store_new),
            )
            found.append(check)
        found.append(await checks.public_url_reachable(system))
        active = (await self._observe()).active
        found.append(await checks.routers_agree(opts.routers, active))
        found.append(await self._instances_agree())
        return found

    async def _instances_agree(self) -> checks.Check:
        """Every live router instance (heartbeats in Redis) applied the current state."""
        r = self.config.router
        stored = await self._patient("reading the state", self.store.read_state)
        live = await self._patient(
            "reading the instances",
            lambda: self.store.instances(time.time(), r.heartbeat_interval * STALE_BEATS),
        )
        if not live:
            return checks.Check("instances agree", False, "no live router instance registered")
        behind = [
            str(doc.get("id"))
            for doc in live
            if int((doc.get("applied") or {}).get("generation", 0)) < stored.generation
        ]
        if behind:
            return checks.Check(
                "instances agree",
                False,
                f"{len(behind)}/{len(live)} live instances have not applied generation "
                f"{stored.generation}: {', '.join(behind)}",
            )
        return checks.Check(
            "instances agree",
            True,
            f"{len(live)} live instance(s), all at generation {stored.generation}",
        )

    async def _step_preflight(self) -> str:
        found = await self._preflight_checks(store_new=True)
        for check in found:
            self.out("  " + check.line())
        bad = [c for c in found if not c.ok]
        if bad:
            raise StepFailed(EXIT_REFUSED, "; ".join(f"{c.name}: {c.detail}" for c in bad))
        return f"{len(found)} checks passed"

    async def _step_smoke(self) -> str:
        opts = self.options
        if not opts.routers:
            raise StepFailed(EXIT_REFUSED, "no router to test through (give --router URL)")
        if not self._release:
            _, self._release = await self._release_now()
        result = await checks.smoke_test(self.config, opts.target, opts.routers[0], self._release)
        for check in result.checks:
            self.out("  " + check.line())
        if not result.ok:
            bad = [c for c in result.checks if not c.ok]
            raise StepFailed(EXIT_REFUSED, "; ".join(f"{c.name}: {c.detail}" for c in bad))
        return f"{len(result.checks)} checks passed through {opts.routers[0]}"

    async def _release_now(self) -> tuple[checks.Check, str]:
        if self.config.router.redis_url.startswith("memory://"):
            return await checks.release_via_router(
                self.config, self.options.target, self.options.routers
            )
        return await checks.release_stored(self.config, self.options.target, store_new=False)

    async def _step_switch(self) -> str:
        opts = self.options
        assert self.record is not None
        current, _ = await self._patient(
            "reading the rollout", lambda: operations.current_rollout(self.store)
        )
        if current is not None and current.running and current.id == self.record.rollout_id:
            self.out(f"  the rollout to {current.target} is {current.state}: watching it")
            return await self._watch_rollout()
        if not opts.yes:
            question = (
                f"switch new sessions from {self.record.old} to {opts.target} "
                f"({switch_plan(opts.steps, opts.interval, ROLLOUTS)})? [y/N] "
            )
            if self.confirm is None or not await self.confirm(question):
                raise StepFailed(EXIT_REFUSED, "not confirmed; nothing was switched")
        reason = f"token-router upgrade {self.record.id}"
        if list(opts.steps) != [100]:
            request = operations.RolloutRequest(
                target=opts.target,
                steps=opts.steps,
                interval=opts.interval,
                max_error_rate=rollouts.DEFAULT_MAX_ERROR_RATE,
                min_requests=rollouts.DEFAULT_MIN_REQUESTS,
            )
            started, _ = await operations.start_rollout(
                self.store, self.config, self.prober, request, source=opts.source, reason=reason
            )
            await self._update(rollout_id=started.id)
            self.out(f"  rollout {started.id} started: {started.percent} % of new sessions")
            return await self._watch_rollout()
        r = self.config.router
        began = time.monotonic()
        outcome = await operations.switch(
            self.store,
            self.config,
            self.prober,
            opts.target,
            source=opts.source,
            expect=self.record.old,
            reason=reason,
        )
        confirmation = await operations.confirm(
            self.store,
            outcome.generation,
            timeout=r.confirm_timeout,
            heartbeat=r.heartbeat_interval,
        )
        self.out(f"  {outcome.text()}; {confirmation.text()}")
        routers = await self._propagated(opts.target)
        self.out("  " + routers.line())
        if not routers.ok:
            raise StepFailed(EXIT_REFUSED, f"switched, but {routers.detail}")
        ms = (time.monotonic() - began) * 1000
        return f"{outcome.previous or '(none)'} -> {opts.target}, confirmed in {ms:.0f} ms"

    async def _watch_rollout(self) -> str:
        """Until the rollout the routers drive ends: promoted (ok), aborted (rolled back)."""
        began = time.monotonic()
        last = ""
        while True:
            view = await self._patient(
                "reading the rollout", lambda: operations.rollout_view(self.store, time.time())
            )
            if view is None:
                raise StepFailed(EXIT_REFUSED, "the rollout document disappeared")
            state = str(view["state"])
            counts = view.get("counts") or {}
            shown = ", ".join(
                f"{s} {c['requests']} req/{c['failures']} failed" for s, c in counts.items()
            )
            line = f"step {view['step_number']}/{len(view['steps'])}: {view['percent']} %"
            if state == "paused":
                line += " (paused: `token-router rollout resume` continues it)"
            if line != last and state in ("running", "paused"):
                self.out(f"  rollout {line}" + (f"; {shown}" if shown else ""))
                last = line
            if state == "promoted":
                took = time.monotonic() - began
                return f"rollout promoted: {self.options.target} active after {took:.1f} s"
            if state == "aborted":
                why = str(view.get("end_reason") or "aborted")
                self.out(f"  rollout aborted: {why}")
                raise StepFailed(EXIT_ROLLED_BACK, why)
            if state == "ended":
                active = (await self._observe()).active
                if active == self.options.target:
                    return f"rollout overtaken by a switch: {active} is active"
                raise StepFailed(
                    EXIT_REFUSED,
                    f"the rollout was ended by a switch to {active}",
                )
            await interrupts.sleep(0.25)

    async def _propagated(self, target: str) -> checks.Check:
        deadline = time.monotonic() + PROPAGATION_BOUND
        while True:
            check = await checks.routers_agree(self.options.routers, target)
            if check.ok or time.monotonic() >= deadline:
                return check
            await interrupts.sleep(0.05)

    async def _step_drain(self) -> str:
        opts = self.options
        assert self.record is not None
        old = self.record.old
        started = time.monotonic()
        deadline = started + opts.drain_timeout
        last_line, last_print = "", 0.0
        history = DrainHistory(self.config.router.drain_stall_after)
        while True:
            view = await drain_view(self.store, self.config, old, history)
            now = time.monotonic()
            if view.line != last_line or now - last_print >= 10:
                self.out(f"  {old}: {view.line}")
                last_line, last_print = view.line, now
            if view.drained:
                self.drain_seconds = now - started
                return f"{old} holds no calls after {self.drain_seconds:.1f} s"
            if now >= deadline:
                raise StepFailed(
                    EXIT_DRAIN_TIMEOUT,
                    f"{old} still holds calls after {opts.drain_timeout:g} s ({view.line})",
                )
            await interrupts.sleep(min(opts.drain_interval, max(0.0, deadline - now)))

    async def _step_offline(self) -> str:
        assert self.record is not None
        old = self.record.old
        await self._patient(
            "marking offline", lambda: self.store.set_offline(old, True, self.options.source)
        )
        return f"{old} is offline: its requests get 503 at once, ready for its own upgrade"


@dataclass(frozen=True, slots=True)
class DrainView:
    open: int | None
    drained: bool
    line: str
    drain: Drain | None = None


async def drain_view(
    store: StateStore, config: Config, system: str, history: DrainHistory
) -> DrainView:
    """The drain state of `system` by the one drain function every surface shares
    (router/systems/drain.py): deciding count and its source, the router's count beside it, the
    rate it falls and an estimate of when it reaches 0 (from `history`'s samples)."""
    try:
        stored = await store.read_state()
        known = config.system_ids
        fallback = stored.recorded if stored.recorded in known else config.default_system
        assert fallback is not None
        snapshot = build_snapshot(stored, known, Snapshot(active=fallback), time.time())
        counts, previewing, _ = await read_counts(store, config.system_ids)
        probes = await probe_all({system: config.systems[system]})
        rows = reports(config, snapshot, counts, previewing, probes, history)
    except StoreUnavailable as exc:
        return DrainView(None, False, f"unknown ({exc})")
    d = next(r.drain for r in rows if r.id == system)
    return DrainView(d.open, d.drained, describe(d), d)


def _client_session() -> Any:
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=checks.TIMEOUT))


def summary_lines(timings: Sequence[StepTiming]) -> list[str]:
    return [f"  {t.step:<10} {t.result:<8} {t.seconds:8.1f} s  {t.detail}" for t in timings]
