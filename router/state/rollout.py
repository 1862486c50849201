"""Progressive rollout: the document, its validation and the controller's decisions.

Pure functions over plain data (no clock, socket or Redis): the controller (rollout_driver.py)
reads the document, the step's counts and the target's health, asks `next_action` what to
do, and writes the answer through the store's compare-and-set. The document lives in Redis
(`<prefix>:rollout`) as JSON; the routers read it with the rest of the state and route new
sessions by `share_of`.

States: running -> paused -> running ...; then one terminal state, kept so every surface can
say how the last rollout ended: promoted (the target became active), aborted (by an operator
or automatically), ended (a switch or a bare SET of `active` overtook it).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

from router.errors import BadRequest
from router.printable import printable
from router.state.watch import Thresholds, Traffic, latency_breach, ms

RUNNING = ("running", "paused")
TERMINAL = ("promoted", "aborted", "ended")
DEFAULT_MAX_ERROR_RATE = 0.05
DEFAULT_MIN_REQUESTS = 20
# Bounds of a rollout, for every way one is started (CLI, API) and for the stored document
# (a redis-cli write included). A step shorter than a second cannot gather the token requests
# the error-share check needs: it would switch through every step unguarded. A week is the
# longest step worth keeping a rollout open for.
MIN_INTERVAL = 1.0
MAX_INTERVAL = 604_800.0
# More requests than a step ever sees would switch the automatic abort off for good.
MAX_MIN_REQUESTS = 1_000_000


@dataclass(frozen=True, slots=True)
class Rollout:
    id: str
    target: str
    source: str  # the system active when the rollout started (what it rolls away from)
    steps: tuple[int, ...]  # percentages of new sessions, strictly increasing, 1..100
    interval: float  # seconds each step holds
    max_error_rate: float
    min_requests: int
    step: int  # index into steps
    step_started: float
    state: str
    started: float
    started_by: str
    paused_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    # Latency abort (0 = off): the target's p99 over max_latency seconds, or over
    # latency_factor times the source's p99 in the same seconds (never below latency_floor).
    max_latency: float = 0.0
    latency_factor: float = 0.0
    latency_floor: float = 0.0

    @property
    def running(self) -> bool:
        return self.state in RUNNING

    @property
    def percent(self) -> int:
        return self.steps[self.step]

    @property
    def last_step(self) -> bool:
        return self.step == len(self.steps) - 1

    def held(self, now: float) -> float:
        """Seconds the current step has been in force (pauses not counted)."""
        until = self.paused_at if self.state == "paused" and self.paused_at else now
        return max(0.0, until - self.step_started)

    def next_in(self, now: float) -> float | None:
        """Seconds until the next step (or the promotion); None when not running."""
        if self.state != "running":
            return None
        return max(0.0, self.interval - self.held(now))

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["steps"] = list(self.steps)
        return doc

    def dumps(self) -> str:
        return orjson.dumps(self.to_json()).decode()


def loads(raw: str | None) -> Rollout | None:
    """The stored document, or None when there is none or it cannot be used (`parse`)."""
    if not raw:
        return None
    try:
        return parse(raw)
    except BadRequest:
        return None


def parse(raw: str) -> Rollout:
    """A stored document, held to the bounds a rollout is started with (BadRequest naming
    the field otherwise): one written by redis-cli with wild values routes nothing."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("not a JSON document") from None
    if not isinstance(doc, dict):
        raise BadRequest("not a JSON object")
    try:
        steps = parse_steps(doc["steps"])
        step = _whole("step", doc["step"])
        if not 0 <= step < len(steps):
            raise BadRequest(f"step: {step} is not an index into {len(steps)} step(s)")
        state = _text("state", doc["state"])
        if state not in RUNNING + TERMINAL:
            raise BadRequest(f"state: {state!r} is not one of {', '.join(RUNNING + TERMINAL)}")
        return Rollout(
            id=_text("id", doc["id"]),
            target=_text("target", doc["target"]),
            source=_text("source", doc["source"]),
            steps=steps,
            interval=parse_interval(doc["interval"]),
            max_error_rate=parse_error_rate(doc["max_error_rate"]),
            min_requests=parse_min_requests(doc["min_requests"]),
            step=step,
            step_started=_number("step_started", doc["step_started"]),
            state=state,
            started=_number("started", doc["started"]),
            started_by=str(doc.get("started_by", "")),
            paused_at=_optional("paused_at", doc.get("paused_at")),
            ended_at=_optional("ended_at", doc.get("ended_at")),
            end_reason=None if doc.get("end_reason") is None else printable(str(doc["end_reason"])),
            max_latency=parse_max_latency(doc.get("max_latency", 0.0)),
            latency_factor=parse_latency_factor(doc.get("latency_factor", 0.0)),
            latency_floor=_latency_floor(doc.get("latency_floor", 0.0)),
        )
    except KeyError as exc:
        raise BadRequest(f"{exc.args[0]}: missing") from None


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name}: {value!r} is not a name")
    return value


def _whole(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name}: {value!r} is not a whole number")
    if isinstance(value, float) and not value.is_integer():  # nan and inf too
        raise BadRequest(f"{name}: {value!r} is not a whole number")
    return int(value)


def _latency_floor(value: object) -> float:
    number = _number("latency_floor", value)
    if not 0 <= number <= 3600:
        raise BadRequest(f"latency_floor: {number:g} must be 0 to 3600 seconds")
    return number


def _optional(name: str, value: object) -> float | None:
    return None if value is None else _number(name, value)


# --- validation (bad input: nothing reaches Redis) ------------------------------------------


def parse_steps(value: object) -> tuple[int, ...]:
    """`"5,25,50,100"` or `[5, 25, 50, 100]` -> (5, 25, 50, 100); BadRequest otherwise."""
    if isinstance(value, str):
        parts: Sequence[object] = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, list):
        parts = value
    else:
        raise BadRequest("steps: give percentages like 5,25,50,100")
    steps: list[int] = []
    for part in parts:
        if isinstance(part, bool):
            raise BadRequest(f"steps: {part!r} is not a whole percentage")
        try:
            number = int(part) if isinstance(part, int | str) else None
        except ValueError:
            number = None
        if number is None or str(part).strip() != str(number):
            raise BadRequest(f"steps: {part!r} is not a whole percentage")
        if not 1 <= number <= 100:
            raise BadRequest(f"steps: {number} is outside 1..100")
        if steps and number <= steps[-1]:
            raise BadRequest(f"steps must increase: {number} follows {steps[-1]}")
        steps.append(number)
    if not steps:
        raise BadRequest("steps: give at least one percentage, like 5,25,50,100")
    return tuple(steps)


def parse_interval(value: object) -> float:
    number = _number("interval", value)
    if not MIN_INTERVAL <= number <= MAX_INTERVAL:
        raise BadRequest(
            f"interval: {number:g} s is outside {MIN_INTERVAL:g}..{MAX_INTERVAL:g} s "
            "(a second to a week per step)"
        )
    return number


def parse_error_rate(value: object) -> float:
    number = _number("max_error_rate", value)
    if not 0 < number <= 1:
        raise BadRequest(f"max_error_rate: {number:g} must be in (0, 1], e.g. 0.05 for 5 %")
    return number


def parse_min_requests(value: object) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 20.0 from a JSON writer that knows only doubles
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest(f"min_requests: {value!r} is not a whole number")
    if isinstance(value, str) and len(value.strip()) > 20:
        raise BadRequest(f"min_requests: {value[:24]!r}... is not a sane number")
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"min_requests: {value!r} is not a whole number") from None
    if not 1 <= number <= MAX_MIN_REQUESTS:
        raise BadRequest(f"min_requests: {number} is outside 1..{MAX_MIN_REQUESTS:,}")
    return number


def parse_max_latency(value: object) -> float:
    number = _number("max_latency", value)
    if not 0 <= number <= 3600:
        raise BadRequest(f"max_latency: {number:g} must be 0 (off) to 3600 seconds of p99")
    return number


def parse_latency_factor(value: object) -> float:
    number = _number("latency_factor", value)
    if number != 0 and not 1 <= number <= 1000:
        raise BadRequest(f"latency_factor: {number:g} must be 0 (off) or 1 to 1000")
    return number


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest(f"{name}: {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise BadRequest(f"{name}: {value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise BadRequest(f"{name}: {value!r} is not a finite number")
    return number


def new_rollout(
    *,
    target: str,
    source: str,
    steps: tuple[int, ...],
    interval: float,
    max_error_rate: float,
    min_requests: int,
    now: float,
    started_by: str,
    max_latency: float = 0.0,
    latency_factor: float = 0.0,
    latency_floor: float = 0.0,
) -> Rollout:
    # The bounds a stored document is read back with (from_json), checked before it is
    # written: a rollout started with a 0.5 s interval was read back as no rollout at all.
    parse_interval(interval)
    parse_min_requests(min_requests)
    return Rollout(
        id=secrets.token_hex(6),
        target=target,
        source=source,
        steps=steps,
        interval=interval,
        max_error_rate=max_error_rate,
        min_requests=min_requests,
        step=0,
        step_started=now,
        state="running",
        started=now,
        started_by=started_by,
        max_latency=max_latency,
        latency_factor=latency_factor,
        latency_floor=latency_floor,
    )


# --- transitions ---------------------------------------------------------------------------


def paused(r: Rollout, now: float) -> Rollout:
    return replace(r, state="paused", paused_at=now)


def resumed(r: Rollout, now: float) -> Rollout:
    """Running again; the time already held in this step still counts."""
    held = r.held(now)
    return replace(r, state="running", paused_at=None, step_started=now - held)


def advanced(r: Rollout, now: float) -> Rollout:
    return replace(r, step=r.step + 1, step_started=now)


def ended(r: Rollout, state: str, now: float, reason: str) -> Rollout:
    return replace(r, state=state, ended_at=now, end_reason=reason, paused_at=None)


@dataclass(frozen=True, slots=True)
class Action:
    """What the controller does now: "advance", "promote" or "abort" (with why)."""

    kind: str
    reason: str


def error_share(counts: Mapping[str, tuple[int, int]], system: str) -> tuple[int, int, float]:
    requests, failures = counts.get(system, (0, 0))
    return requests, failures, (failures / requests if requests else 0.0)


def next_action(
    r: Rollout,
    now: float,
    counts: Mapping[str, tuple[int, int]],
    probe_error: str | None,
    traffic: Mapping[str, Traffic] | None = None,
    bounds: Sequence[float] = (),
) -> Action | None:
    """The controller's one decision per tick.

    Abort first (a failing target must not get one more step): its health probe failed, or
    its share of failed token requests in this step, counted by every instance, reached the
    threshold after at least `min_requests`, or the p99 of its token answers in the step's
    newest seconds (`traffic`, from the ledger: every instance) exceeds `max_latency` or
    `latency_factor` times the source's in the same seconds. A paused rollout is still
    watched: pausing holds the share, it does not switch the safety net off. Then the
    clock: a step that held for its interval advances; the last one promotes.
    """
    if not r.running:
        return None
    if probe_error is not None:
        return Action("abort", f"{r.target}'s gateway failed its health probe: {probe_error}")
    requests, failures, share = error_share(counts, r.target)
    if requests >= r.min_requests and share >= r.max_error_rate:
        return Action(
            "abort",
            f"{failures} of {requests} token requests to {r.target} failed in step "
            f"{r.step + 1} ({share:.1%} >= {r.max_error_rate:.1%})",
        )
    slow = _latency(r, traffic, bounds)
    if slow is not None:
        return Action("abort", slow)
    if r.state != "running" or r.held(now) < r.interval:
        return None
    if r.last_step:
        return Action("promote", f"the last step, {r.percent} %, held for {r.interval:g} s")
    return Action("advance", f"{r.percent} % held for {r.interval:g} s")


def _latency(
    r: Rollout, traffic: Mapping[str, Traffic] | None, bounds: Sequence[float]
) -> str | None:
    if traffic is None or not bounds or not (r.max_latency or r.latency_factor):
        return None
    limits = Thresholds(
        r.max_error_rate, r.min_requests, r.max_latency, r.latency_factor, r.latency_floor
    )
    target = traffic.get(r.target, Traffic())
    source = traffic.get(r.source)
    why = latency_breach(target, source, limits, bounds)
    if why is None:
        return None
    base = None if source is None else source.p99(bounds)
    return (
        f"token requests to {r.target} in step {r.step + 1} too slow: {why} "
        f"({target.answered} answers; {r.source}'s p99 {ms(base)} in the same seconds)"
    )


@dataclass(frozen=True, slots=True)
class Share:
    """What the request path needs of a rollout: where, and how much (0..1). Paused rollouts
    keep their share; terminal ones have none (None in the snapshot)."""

    target: str
    fraction: float
    rollout_id: str
    step: int


def share_of(r: Rollout | None) -> Share | None:
    if r is None or not r.running:
        return None
    return Share(r.target, r.percent / 100.0, r.id, r.step)
