"""The operator's state changes, one implementation for every surface.

The CLI, the admin API, the page (through the API) and the rollout controller all switch,
undo, take systems offline and drive rollouts through these functions: the same gates
(gates.py), the same atomic store scripts (compare-and-set included), the same audit
entries, the same propagation confirmation. A surface only renders the outcome.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from router.config import Config
from router.errors import BadRequest, Conflict, GateRefused
from router.state import rollout as model
from router.state.rollout import Rollout
from router.state.snapshot import Snapshot, build_snapshot
from router.state.store import AuditFields, StateStore, StoredState, SwitchResult
from router.switching.fleet import STALE_BEATS
from router.switching.gates import Gates, check_offline, check_target, enforce, known_target
from router.switching.outcomes import Confirmation, SwitchOutcome
from router.systems.drain import DrainFacts, deciding_count
from router.systems.prober import GatewayProber
from router.systems.reports import read_counts

# The changes of the active system `undo` goes back from ("auto-undo": the post-switch
# watch's own undo, state/watch.py).
SWITCH_ACTIONS = ("switch", "undo", "promote", "auto-undo")


def snapshot_of(stored: StoredState, config: Config) -> Snapshot:
    """What the routers make of the stored state (for a process that is not a router)."""
    known = config.system_ids
    fallback = stored.recorded if stored.recorded in known else config.default_system
    assert fallback is not None
    return build_snapshot(stored, known, Snapshot(active=fallback), time.time())


async def _gates(
    config: Config,
    gates: Gates,
    target: str,
    stored: StoredState,
    force: bool,
) -> str:
    # Age is measured from when this check began: a probe made for it is fresh however
    # long it took to answer.
    began = time.time()
    probe = await gates.prober.fresh(target, config.router.gate_probe_age)
    refusals = check_target(target, stored.offline, probe, began, config.router.gate_probe_age)
    forced = enforce(refusals, force)
    await gates.fingerprint_now(target)
    return forced


def _reason(reason: str, forced: str) -> str:
    if not forced:
        return reason
    return f"{reason} (forced past {forced})" if reason else f"forced past {forced}"


async def switch(
    store: StateStore,
    config: Config,
    gates: Gates,
    target: object,
    *,
    source: str,
    expect: str | None = None,
    force: bool = False,
    reason: str = "",
    action: str = "switch",
) -> SwitchOutcome:
    """Make `target` active through the gates; `expect` is the compare-and-set."""
    system = known_target(target, config.system_ids)
    if expect is not None:
        known_target(expect, config.system_ids)
    stored = await store.read_state()
    # The compare-and-set is checked here for a clear answer before probing, and again
    # atomically by the script (someone may switch while we probe).
    if expect is not None and stored.active != expect:
        raise GateRefused(
            "expect",
            f"the active system is {stored.active or '(none)'}, not {expect}: someone else "
            "changed it; look again and retry",
            system=stored.active,
            overridable=False,
        )
    current = snapshot_of(stored, config).active
    forced = ""
    if system != current or system in stored.offline:
        forced = await _gates(config, gates, system, stored, force)
    result: SwitchResult = await store.change_active(
        system,
        source,
        config.system_ids,
        expect=expect,
        reason=_reason(reason, forced),
        forced=bool(forced),
        action=action,
    )
    return SwitchOutcome(result.previous, system, result.generation, forced)


async def undo(
    store: StateStore,
    config: Config,
    gates: Gates,
    *,
    source: str,
    force: bool = False,
    reason: str = "",
) -> SwitchOutcome:
    """Back to the system that was active before the last switch, through the same gates.

    The last switch is read from the audit stream; its `to` is the compare-and-set, so an
    undo never undoes a switch it did not see.
    """
    entries = await store.audit(200)
    last = next((e for e in entries if e.action in SWITCH_ACTIONS), None)
    if last is None or not last.from_:
        raise Conflict("nothing to undo: no switch between two systems is recorded")
    if last.from_ not in config.system_ids:
        raise Conflict(f"cannot undo: {last.from_!r} is not a configured system any more")
    return await switch(
        store,
        config,
        gates,
        last.from_,
        source=source,
        expect=last.to,
        force=force,
        reason=reason or f"undo of {last.from_} -> {last.to}",
        action="undo",
    )


async def open_count(
    store: StateStore, config: Config, prober: GatewayProber, system: str
) -> tuple[int | None, str, str]:
    """(count, source, why unknown) of `system`, decided as every surface decides "drained"
    (router/systems/drain.py): the gateway's own count where it has a stats_url (probed
    now), else the routers'."""
    counts, _, error = await read_counts(store, config.system_ids)
    configured = config.systems[system]
    gateway_open, gateway_error = await prober.gateway_count(system, max_age=0.0)
    facts = DrainFacts(
        system=system,
        router_open=None if counts is None else counts.get(system, 0),
        stats_configured=bool(configured.stats_url),
        gateway_open=gateway_open,
        gateway_error=gateway_error,
    )
    count, source = deciding_count(facts)
    return count, source, gateway_error or error


async def set_offline(
    store: StateStore,
    config: Config,
    prober: GatewayProber,
    system: object,
    offline: bool,
    *,
    source: str,
    force: bool = False,
    reason: str = "",
) -> None:
    """Offline/online through the gates: offlining the active system (atomically) or a system
    that still holds calls is refused unless forced."""
    sid = known_target(system, config.system_ids)
    overrode = ""
    if offline:
        stored = await store.read_state()
        active = snapshot_of(stored, config).active
        if active == sid:
            overrode = "active: it is the active system" if force else ""
        elif sid not in stored.offline:
            count, counted_by, unknown = await open_count(store, config, prober, sid)
            overrode = enforce(check_offline(sid, count, counted_by, unknown), force)
    await store.set_offline(
        sid,
        offline,
        source,
        reason=_reason(reason, overrode),
        forced=bool(overrode),
        refuse_active=offline and not force,
    )


# --- propagation confirmation ---------------------------------------------------------------


async def confirm(
    store: StateStore, generation: int, *, timeout: float, heartbeat: float
) -> Confirmation:
    """Wait until every live instance reports `generation` applied, at most `timeout` s.

    An instance seen live during the wait stays in the answer: one that falls silent before
    applying is a laggard (it may be frozen, still routing on the old state), not an
    instance that never was. One that left the registry before its heartbeat went stale
    deregistered itself (a clean stop: it routes nothing any more) and leaves the answer.
    The wait ends early once only silent laggards are left."""
    started = time.monotonic()
    stale_after = heartbeat * STALE_BEATS
    seen: dict[str, tuple[int, float]] = {}  # id -> (generation applied, its last heartbeat)
    while True:
        now = time.time()
        live = await store.instances(now, stale_after)
        live_ids = set()
        for doc in live:
            ident = str(doc.get("id"))
            live_ids.add(ident)
            applied = int((doc.get("applied") or {}).get("generation", 0))
            seen[ident] = (applied, float(doc.get("seen") or now))
        for ident in [i for i in seen if i not in live_ids]:
            if now - seen[ident][1] <= stale_after:
                del seen[ident]  # gone while its heartbeat was fresh: it stopped cleanly
        laggards = tuple(sorted(i for i, (g, _) in seen.items() if g < generation))
        silent = tuple(i for i in laggards if i not in live_ids)
        elapsed = (time.monotonic() - started) * 1000
        waiting = [i for i in laggards if i in live_ids]
        if not waiting or elapsed >= timeout * 1000:
            return Confirmation(
                len(seen) - len(laggards),
                len(seen),
                elapsed,
                laggards,
                bool(waiting),
                silent,
            )
        await asyncio.sleep(0.005)


# --- rollouts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RolloutRequest:
    """A validated `rollout start` (bad input never reaches Redis)."""

    target: str
    steps: tuple[int, ...]
    interval: float
    max_error_rate: float
    min_requests: int
    max_latency: float | None = None  # None: the configuration's latency_max_p99
    latency_factor: float | None = None  # None: the configuration's latency_factor

    @classmethod
    def parse(cls, config: Config, doc: dict[str, Any]) -> RolloutRequest:
        target = known_target(doc.get("system"), config.system_ids)
        if "steps" not in doc:
            raise BadRequest("steps: give percentages like 5,25,50,100")
        if "interval" not in doc:
            raise BadRequest("interval: give the seconds each step holds, e.g. 120")
        return cls(
            target=target,
            steps=model.parse_steps(doc["steps"]),
            interval=model.parse_interval(doc["interval"]),
            max_error_rate=model.parse_error_rate(
                doc.get("max_error_rate", model.DEFAULT_MAX_ERROR_RATE)
            ),
            min_requests=model.parse_min_requests(
                doc.get("min_requests", model.DEFAULT_MIN_REQUESTS)
            ),
            max_latency=None
            if doc.get("max_latency") is None
            else model.parse_max_latency(doc["max_latency"]),
            latency_factor=None
            if doc.get("latency_factor") is None
            else model.parse_latency_factor(doc["latency_factor"]),
        )


async def current_rollout(store: StateStore) -> tuple[Rollout | None, str | None]:
    raw = (await store.read_state()).rollout
    return model.loads(raw), raw


async def start_rollout(
    store: StateStore,
    config: Config,
    gates: Gates,
    request: RolloutRequest,
    *,
    source: str,
    force: bool = False,
    reason: str = "",
) -> tuple[Rollout, int]:
    stored = await store.read_state()
    existing = model.loads(stored.rollout)
    if existing is not None and existing.running:
        raise Conflict(
            f"a rollout to {existing.target} is already {existing.state} "
            f"(step {existing.step + 1}/{len(existing.steps)}); promote or abort it first"
        )
    active = snapshot_of(stored, config).active
    if request.target == active:
        raise Conflict(f"{request.target} is already the active system: nothing to roll out")
    forced = await _gates(config, gates, request.target, stored, force)
    if forced and request.target in stored.offline:
        await store.set_offline(request.target, False, source, reason="forced rollout to it")
    now = time.time()
    r = model.new_rollout(
        target=request.target,
        source=active,
        steps=request.steps,
        interval=request.interval,
        max_error_rate=request.max_error_rate,
        min_requests=request.min_requests,
        now=now,
        started_by=source,
        max_latency=config.router.latency_max_p99
        if request.max_latency is None
        else request.max_latency,
        latency_factor=config.router.latency_factor
        if request.latency_factor is None
        else request.latency_factor,
        latency_floor=config.router.latency_floor,
    )
    steps = ",".join(str(s) for s in r.steps)
    why = f"steps {steps} every {r.interval:g} s, abort at {r.max_error_rate:.1%} errors"
    if r.max_latency:
        why += f" or p99 over {r.max_latency:g} s"
    if r.latency_factor:
        why += f" or over {r.latency_factor:g} x {active}'s p99"
    generation = await store.write_rollout(
        stored.rollout,
        r.dumps(),
        AuditFields(
            "rollout-start",
            source,
            active,
            r.target,
            _reason(f"{why}; {reason}" if reason else why, forced),
            bool(forced),
        ),
        expect_active=active if stored.active == active else "",
    )
    return r, generation


def _need_running(r: Rollout | None) -> Rollout:
    if r is None or not r.running:
        raise Conflict(
            "no rollout is running" + ("" if r is None else f" (the last one {r.state})")
        )
    return r


async def pause_rollout(store: StateStore, *, source: str, reason: str = "") -> tuple[Rollout, int]:
    r, raw = await current_rollout(store)
    r = _need_running(r)
    if r.state == "paused":
        raise Conflict(f"the rollout to {r.target} is already paused")
    new = model.paused(r, time.time())
    fields = AuditFields("rollout-pause", source, r.source, r.target, reason or f"at {r.percent} %")
    return new, await store.write_rollout(raw, new.dumps(), fields)


async def resume_rollout(
    store: StateStore, *, source: str, reason: str = ""
) -> tuple[Rollout, int]:
    r, raw = await current_rollout(store)
    r = _need_running(r)
    if r.state != "paused":
        raise Conflict(f"the rollout to {r.target} is not paused")
    new = model.resumed(r, time.time())
    fields = AuditFields(
        "rollout-resume", source, r.source, r.target, reason or f"at {r.percent} %"
    )
    return new, await store.write_rollout(raw, new.dumps(), fields)


async def abort_rollout(
    store: StateStore, *, source: str, reason: str = "", expected: str | None = None
) -> tuple[Rollout, int]:
    """Share to 0 at once, active unchanged. `expected`: the document the caller decided on
    (the controller), so an abort never lands on a rollout it did not look at."""
    r, raw = await current_rollout(store)
    if expected is not None and raw != expected:
        raise Conflict("the rollout changed meanwhile")
    r = _need_running(r)
    why = reason or f"aborted by {source}"
    new = model.ended(r, "aborted", time.time(), why)
    fields = AuditFields("rollout-abort", source, r.source, r.target, why)
    return new, await store.write_rollout(raw, new.dumps(), fields)


async def advance_rollout(
    store: StateStore, r: Rollout, raw: str, *, source: str, reason: str
) -> tuple[Rollout, int]:
    new = model.advanced(r, time.time())
    fields = AuditFields(
        "rollout-step",
        source,
        r.source,
        r.target,
        f"step {new.step + 1}/{len(new.steps)}: {new.percent} % ({reason})",
    )
    return new, await store.write_rollout(raw, new.dumps(), fields)


async def promote_rollout(
    store: StateStore,
    config: Config,
    gates: Gates,
    *,
    source: str,
    force: bool = False,
    reason: str = "",
) -> SwitchOutcome:
    """Straight to 100 %: the target becomes active through the same path as a switch."""
    r, _ = await current_rollout(store)
    r = _need_running(r)
    return await switch(
        store,
        config,
        gates,
        r.target,
        source=source,
        expect=r.source,
        force=force,
        reason=reason or f"rollout promoted at {r.percent} %",
        action="promote",
    )


async def rollout_view(store: StateStore, now: float) -> dict[str, Any] | None:
    """`GET /api/rollout` / `rollout status`: the document plus share, countdown and counts."""
    r, _ = await current_rollout(store)
    if r is None:
        return None
    counts = await store.rollout_counts(r.id, r.step)
    doc = r.to_json()
    doc["percent"] = r.percent if r.running else 0
    doc["step_number"] = r.step + 1
    doc["next_in"] = r.next_in(now)
    doc["counts"] = {
        system: {"requests": req, "failures": fail} for system, (req, fail) in counts.items()
    }
    return doc
