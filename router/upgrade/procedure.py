"""Running an upgrade: the steps in plan order, their output, the document and the audit.

`plan.decide` says what to run; `Procedure` runs it: each step (steps.py, a function over
the shared `Context`) prints a line when it starts and when it ends, with what it checked and
measured, and writes one audit entry. Whatever stops the procedure (Ctrl-C, a failed check, a
drain timeout) leaves the upgrade document `stopped` with the step it reached, so the next
`token-router upgrade <target>` resumes from the state in Redis, and prints how to resume or
roll back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import replace

from router import cancellation
from router.errors import RouterError, StoreUnavailable
from router.upgrade import checks, steps
from router.upgrade.context import ROLLOUTS, Context, StepFailed, StepTiming
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
    Run,
    UpgradeRecord,
    decide,
    next_steps,
    stop_advice,
    switch_plan,
)


class Procedure(Context):
    """One run of `token-router upgrade` (or of the drill's upgrade)."""

    async def run(self) -> int:
        try:
            return await self._run()
        finally:
            await self.prober.close()

    async def _run(self) -> int:
        opts = self.options
        obs = await self.observe()
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
        await self.save(replace(record, state="running", owner=opts.me, beat=now, message=""))
        await self.audit(
            "upgrade-start" if decision.kind == "start" else "upgrade-resume", decision.note
        )
        beat = asyncio.create_task(self.heartbeat())
        step = decision.steps[0]
        try:
            for step in decision.steps:
                cancellation.check()  # a Ctrl-C lost during the last step: never begin the next
                await self.update(step=step)
                await self._step(step)
        except StepFailed as exc:
            beat.cancel()
            if exc.code == EXIT_ROLLED_BACK:
                await self._rolled_back(str(exc), step)
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
        await self.update(state="done", step=decision.steps[-1])
        await self.audit(
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
        if "watch" in decision.steps:
            window = self.config.router.post_switch_watch
            self.out(
                f"  step 4 follows the routers' watch of {opts.target} for {window:g} s after "
                "the switch (undone on a breach: exit 4)"
                if window > 0
                else "  step 4: the post-switch watch is off (router.post_switch_watch = 0)"
            )
        if "drain" in decision.steps:
            self.out(
                f"  step 5 waits up to {opts.drain_timeout:g} s for {decision.old} to hold no calls"
            )

    async def _dry_run(self, decision: Run) -> int:
        self.outcome = "dry-run"
        opts = self.options
        failed = False
        if "preflight" in decision.steps:
            self.out(f"step 1/{len(STEPS)} preflight (dry run: nothing is written)")
            for check in await steps.preflight_checks(self, store_new=False):
                self.out("  " + check.line())
                failed |= not check.ok
            self.out(f"step 2/{len(STEPS)} preview smoke test (dry run)")
            self.out(
                f"  [skip] preview token: a real run mints one on {opts.target} and deletes it"
            )
            if self.release and opts.routers:
                async with steps.client_session() as session:
                    check = await checks._library_check(
                        session, self.config.systems[opts.target], opts.routers[0], self.release
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
        self.out(f"step {number}/{len(STEPS)} {STEP_TITLES[step]}: started")
        started = time.monotonic()
        try:
            detail = await steps.STEP_RUNNERS[step](self)
        except StepFailed as exc:
            seconds = time.monotonic() - started
            result = {EXIT_DRAIN_TIMEOUT: "timeout", EXIT_ROLLED_BACK: "aborted"}.get(
                exc.code, "failed"
            )
            self.timings.append(StepTiming(step, seconds, result, str(exc)))
            self.out(
                f"step {number}/{len(STEPS)} {STEP_TITLES[step]}: {result.upper()} after "
                f"{seconds:.1f} s"
            )
            await self.audit(f"upgrade-{step}", f"{result}: {exc}")
            raise
        seconds = time.monotonic() - started
        self.timings.append(StepTiming(step, seconds, "ok", detail))
        self.out(
            f"step {number}/{len(STEPS)} {STEP_TITLES[step]}: ok in {seconds:.1f} s ({detail})"
        )
        await self.audit(f"upgrade-{step}", f"ok in {seconds:.1f} s: {detail}")

    async def _rolled_back(self, why: str, step: str = "switch") -> None:
        """The rollout aborted, or the post-switch watch undid the switch, on its own:
        final, the old system is active."""
        self.outcome = "rolled-back"
        self.rolled_back = why
        with contextlib.suppress(StoreUnavailable, StepFailed):
            await self.update(state="rolled-back", step=step, message=why)
        with contextlib.suppress(StoreUnavailable):
            await self.audit("upgrade-rolled-back", why)
        if self.record is None:
            return
        old, target = self.record.old, self.record.target
        hint = self.options.config_hint
        if step == "watch":
            self.err(f"upgrade rolled back: {why}")
            self.err(
                f"  {old} is active again and keeps every call; {target} failed in real "
                "traffic after the switch. Look at its gateway (health, logs, media broker "
                f"ports, memory), `token-router history{hint}` has the evidence; once fixed, "
                f"run `token-router upgrade {target}{hint}` again"
            )
            return
        self.err(f"upgrade rolled back: the rollout aborted: {why}")
        self.err(
            f"  {old} stays active; fix {target} and run `token-router upgrade {target}` again"
        )

    async def _stop(self, step: str, how: str, why: str) -> None:
        self.outcome = how
        state = "stopped"
        with contextlib.suppress(StoreUnavailable, StepFailed):
            await self.update(state=state, step=step, message=why)
        with contextlib.suppress(StoreUnavailable):
            await self.audit("upgrade-stopped", f"at {step}: {why}")
        if self.record is not None:
            self.err(f"upgrade stopped at step {STEPS.index(step) + 1} ({step}): {why}")
            for line in stop_advice(self.record, step, ROLLOUTS, self.options.config_hint):
                self.err(f"  {line}")


def summary_lines(timings: Sequence[StepTiming]) -> list[str]:
    return [f"  {t.step:<10} {t.result:<8} {t.seconds:8.1f} s  {t.detail}" for t in timings]
