"""What `token-router upgrade` does next: pure decisions over the observed state.

The procedure (procedure.py) reads Redis, builds an `Observed`, and asks `decide` whether to
refuse (and with which exit code), start from the first step, or resume an upgrade that was
interrupted (a rollout in progress, a drain under way). No clock, socket or Redis here: the
decisions are unit-tested over plain data.

The upgrade document (`<prefix>:upgrade`, JSON) is what makes a resume possible and a second
concurrent upgrade refusable: the process driving an upgrade rewrites `beat` every second;
a document whose owner stopped beating for `LEASE` seconds belongs to nobody and is resumed
by the next `token-router upgrade` to the same target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import orjson

# The six steps, in order. "offline" only runs with --offline-old; "watch" follows the
# routers' post-switch watch, so the old system is not drained and fenced off while the new
# one could still be undone.
STEPS = ("preflight", "smoke", "switch", "watch", "drain", "offline")
STEP_TITLES = {
    "preflight": "preflight",
    "smoke": "preview smoke test",
    "switch": "switch new sessions",
    "watch": "watch the new system",
    "drain": "drain the old system",
    "offline": "take the old system offline",
}

# Exit codes (SPEC section 1 plus the upgrade's own 4).
EXIT_DONE = 0
EXIT_DRAIN_TIMEOUT = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_ROLLED_BACK = 4

# Seconds without a heartbeat after which an upgrade's owner is presumed gone.
LEASE = 5.0

# States of the upgrade document. "running" and "stopped" can be resumed; the others
# ("done", "rolled-back", "failed") are final and a new upgrade starts afresh.
RESUMABLE = ("running", "stopped")


@dataclass(frozen=True, slots=True)
class UpgradeRecord:
    id: str
    target: str
    old: str  # the system that was active when the upgrade started
    offline_old: bool
    state: str  # running | stopped | done | rolled-back | failed
    step: str  # the step running, or the last one reached
    started: float
    started_by: str
    owner: str  # "host:pid" of the process driving it
    beat: float  # the owner's last heartbeat (time.time())
    rollout_id: str = ""  # the rollout this upgrade started, if any
    message: str = ""  # why it stopped, failed or was rolled back

    def dumps(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def owned_elsewhere(self, me: str, now: float) -> bool:
        """Another live process drives this upgrade."""
        return self.state == "running" and self.owner != me and now - self.beat < LEASE


def loads_record(raw: str | None) -> UpgradeRecord | None:
    if not raw:
        return None
    try:
        doc = orjson.loads(raw)
        return UpgradeRecord(
            id=str(doc["id"]),
            target=str(doc["target"]),
            old=str(doc["old"]),
            offline_old=bool(doc["offline_old"]),
            state=str(doc["state"]),
            step=str(doc["step"]),
            started=float(doc["started"]),
            started_by=str(doc["started_by"]),
            owner=str(doc["owner"]),
            beat=float(doc["beat"]),
            rollout_id=str(doc.get("rollout_id", "")),
            message=str(doc.get("message", "")),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class RolloutFacts:
    """The rollout as far as the upgrade cares (None when the build has no rollouts)."""

    id: str
    target: str
    source: str
    state: str  # running | paused | promoted | aborted | ended
    end_reason: str = ""

    @property
    def running(self) -> bool:
        return self.state in ("running", "paused")


@dataclass(frozen=True, slots=True)
class Observed:
    """What the procedure read before deciding."""

    known: tuple[str, ...]
    active: str
    offline: frozenset[str]
    record: UpgradeRecord | None
    rollout: RolloutFacts | None
    now: float


@dataclass(frozen=True, slots=True)
class Request:
    target: str
    offline_old: bool
    me: str  # this process, "host:pid"


@dataclass(frozen=True, slots=True)
class Refuse:
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class Finished:
    """Nothing to do: the upgrade to this target already ended (code says how)."""

    code: int
    message: str


@dataclass(frozen=True, slots=True)
class Run:
    """Run `steps` in order; `old` is the system being upgraded away from."""

    kind: Literal["start", "resume"]
    old: str
    steps: tuple[str, ...]
    record: UpgradeRecord | None  # the document resumed (None: a new one is written)
    note: str  # one line on why these steps (shown to the operator)


Decision = Refuse | Finished | Run


def steps_for(offline_old: bool, first: str = "preflight") -> tuple[str, ...]:
    wanted = STEPS if offline_old else STEPS[:-1]
    return wanted[wanted.index(first) :] if first in wanted else ()


def decide(obs: Observed, req: Request) -> Decision:
    """Refuse, say it is finished, start afresh or resume. Bad input changes nothing."""
    target = req.target
    if target not in obs.known:
        return Refuse(
            EXIT_USAGE, f"unknown system {target!r}; configured systems: {', '.join(obs.known)}"
        )
    record = obs.record
    if record is not None and record.owned_elsewhere(req.me, obs.now):
        return Refuse(
            EXIT_REFUSED,
            f"refused (gate: busy): an upgrade to {record.target} is running "
            f"(driven by {record.owner}, step {record.step}); wait for it, or stop that "
            "process first",
        )
    rollout = obs.rollout
    ours = record is not None and rollout is not None and rollout.id == record.rollout_id
    if (
        rollout is not None
        and rollout.running
        and not (ours and record is not None and record.target == target)
    ):
        return Refuse(
            EXIT_REFUSED,
            f"refused (gate: busy): a rollout to {rollout.target} is {rollout.state}; "
            "promote or abort it first (`token-router rollout promote|abort`)",
        )
    if record is not None and record.state in RESUMABLE and record.target == target:
        resumed = _resume(obs, req, record)
        if resumed is not None:
            return resumed
    if target == obs.active:
        if record is not None and record.target == target and record.state == "done":
            return Finished(EXIT_DONE, f"the upgrade to {target} is already done")
        return Refuse(
            EXIT_USAGE,
            f"{target} is already the active system: nothing to upgrade "
            f"(`token-router drain-wait <old system>` watches a drain)",
        )
    if target in obs.offline:
        return Refuse(
            EXIT_REFUSED,
            f"refused (gate: offline): {target} is marked offline; bring it back with "
            f"`token-router online {target}` first",
        )
    note = f"upgrade {obs.active} -> {target}"
    if record is not None and record.state in RESUMABLE and record.target != target:
        note += f" (the unfinished upgrade to {record.target} is superseded)"
    return Run("start", obs.active, steps_for(req.offline_old), None, note)


def _resume(obs: Observed, req: Request, record: UpgradeRecord) -> Decision | None:
    """Where an interrupted upgrade to the same target picks up, from what Redis holds."""
    offline_old = record.offline_old or req.offline_old
    resumed = replace(record, offline_old=offline_old)
    rollout = obs.rollout
    ours = rollout is not None and rollout.id == record.rollout_id and bool(record.rollout_id)
    if ours and rollout is not None and rollout.running:
        return Run(
            "resume",
            record.old,
            steps_for(offline_old, "switch"),
            resumed,
            f"resuming: the rollout to {record.target} is {rollout.state}; watching it",
        )
    if ours and rollout is not None and rollout.state == "aborted" and obs.active == record.old:
        return Finished(
            EXIT_ROLLED_BACK,
            f"the rollout to {record.target} was aborted ({rollout.end_reason or 'no reason'}); "
            f"{record.old} stays active. Fix {record.target} and run the upgrade again",
        )
    if obs.active == record.target:
        if record.old in obs.offline:
            return Finished(EXIT_DONE, f"the upgrade to {record.target} is already done")
        return Run(
            "resume",
            record.old,
            steps_for(offline_old, "watch"),
            resumed,
            f"resuming: {record.target} is active; following its watch, then waiting for "
            f"{record.old} to drain",
        )
    if obs.active == record.old:
        # Nothing was switched yet: the checks are cheap and the world may have changed,
        # so run them again from the start under the same upgrade id.
        return Run(
            "resume",
            record.old,
            steps_for(offline_old),
            resumed,
            f"resuming the upgrade {record.old} -> {record.target} from the checks "
            f"(it stopped at {record.step})",
        )
    return None  # a third system became active meanwhile: start afresh


def stop_advice(record: UpgradeRecord, step: str, rollouts: bool, hint: str = "") -> list[str]:
    """What the operator can do after an interruption or a failed step at `step` (`hint`:
    ` --config <path>`, so the commands work as printed)."""
    target, old = record.target, record.old
    lines = [f"resume: token-router upgrade {target}{hint}"]
    if step in ("preflight", "smoke"):
        lines.append(f"nothing was switched: {old} is still active")
    elif step == "switch" and rollouts:
        lines.append(
            f"the rollout goes on in the routers; roll back with `token-router rollout abort{hint}`"
        )
    else:
        lines.append(
            f"roll back: token-router switch {old}{hint}"
            + (f" (or `token-router undo{hint}`)" if rollouts else "")
        )
    return lines


def next_steps(old: str, target: str, old_offline: bool, hint: str = "") -> list[str]:
    """After an upgrade to `target`: the way back to `old`, as commands that work as printed
    (`hint`: ` --config <path>`). The round trip is the same procedure with the roles swapped."""
    cli = "token-router"
    if old_offline:
        steps = [
            f"upgrade {old} itself: it holds no calls, and its requests get 503 meanwhile",
            f"{cli} online {old}{hint}",
        ]
    else:
        steps = [
            f"upgrade {old} itself: it holds no calls and gets no new sessions "
            f"(`{cli} offline {old}{hint}` fences it off meanwhile, `{cli} online {old}{hint}` "
            "after)"
        ]
    steps += [
        f"{cli} releases refresh --system {old}{hint}   (fingerprints its new libraries)",
        f"{cli} upgrade {old}{hint}   (the same steps, {target} -> {old})",
    ]
    head = f"next, to bring new sessions back to {old} (or stay on {target}: nothing to do):"
    return [head] + [f"  {n}. {step}" for n, step in enumerate(steps, start=1)]


def switch_plan(steps: Sequence[int], interval: float, rollouts: bool) -> str:
    """How step 3 will switch, in words (printed by the plan and the dry run)."""
    if not rollouts:
        return "switch at once (this build has no progressive rollout)"
    if list(steps) == [100]:
        return "guarded switch at once (--steps 100)"
    shown = ",".join(str(s) for s in steps)
    return f"progressive rollout {shown} %, each step held {interval:g} s, automatic abort"
