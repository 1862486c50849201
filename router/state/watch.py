"""The post-switch watch: its document, the figures it judges and its verdicts.

Pure functions over plain data (no clock, socket or Redis). After every change of the active
system the elected leader (switching/watch_driver.py) keeps a watch document in Redis
(`<prefix>:watch`) for `post_switch_watch` seconds. Every tick it reads the token requests
every instance counted (switching/ledger.py) and asks `verdict` what to do: nothing yet, the
watch passed, or the new system breached a threshold, in which case it undoes the switch (or,
when it may not undo, raises the alarm).

What is judged, on token requests only (new sessions: what a failing system costs first):
- the failed share: 5xx answers and no answer at all, against `watch_max_error_rate`, and
  only when it is worse than the old system's own share before the switch (a fault both
  systems show is not the new system's: going back would not help);
- the p99 of the gateway's answers, from the router's own latency histograms, against
  `latency_max_p99` (absolute) and the old system's p99 before the switch times
  `latency_factor` (relative, never below `latency_floor`: a 1 ms baseline tripled is noise).

States: watching -> passed | undone | alarm | ended (another switch overtook it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

WATCHING = "watching"
PASSED = "passed"
UNDONE = "undone"
ALARM = "alarm"
ENDED = "ended"
STATES = (WATCHING, PASSED, UNDONE, ALARM, ENDED)

# The buckets of tokenrouter_upstream_seconds (metrics.py), here so the watch's figures are
# read without importing prometheus_client (the CLI must not, before --workers sets it up).
# Upstream latency: a token hop is ~1 ms on a LAN, a slow gateway seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# The action the watch's own undo is audited with; a switch recorded with it starts no watch
# (no flapping: after an automatic undo the router never switches forward on its own).
AUTO_UNDO = "auto-undo"
ALARM_ACTION = "watch-alarm"
# Audit actions that change the active system (operations.SWITCH_ACTIONS plus the watch's).
CHANGES = ("switch", "undo", "promote", AUTO_UNDO)


@dataclass(frozen=True, slots=True)
class Traffic:
    """Token requests to one system over some span: counted, failed, and the answered ones
    per latency bucket (the router's histogram buckets; the last one is +Inf)."""

    requests: int = 0
    failures: int = 0
    buckets: tuple[int, ...] = ()

    @property
    def share(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def answered(self) -> int:
        return sum(self.buckets)

    def __add__(self, other: Traffic) -> Traffic:
        size = max(len(self.buckets), len(other.buckets))
        mine = self.buckets + (0,) * (size - len(self.buckets))
        theirs = other.buckets + (0,) * (size - len(other.buckets))
        return Traffic(
            self.requests + other.requests,
            self.failures + other.failures,
            tuple(a + b for a, b in zip(mine, theirs, strict=True)),
        )

    def p99(self, bounds: Sequence[float]) -> float | None:
        return quantile(self.buckets, bounds, 0.99)

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "failures": self.failures, "buckets": list(self.buckets)}


def traffic_from(doc: Any) -> Traffic | None:
    if not isinstance(doc, dict):
        return None
    return Traffic(
        int(doc.get("requests", 0)),
        int(doc.get("failures", 0)),
        tuple(int(b) for b in doc.get("buckets", ())),
    )


def quantile(buckets: Sequence[int], bounds: Sequence[float], q: float) -> float | None:
    """The q-quantile of a histogram, as Prometheus' histogram_quantile estimates it: linear
    within the bucket it falls in; in the +Inf bucket, the highest finite bound. None when
    the histogram is empty."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = 0.0 if i == 0 else float(bounds[i - 1])
            return lower + (float(bounds[i]) - lower) * (rank - seen) / count
        seen += count
    return float(bounds[-1])


@dataclass(frozen=True, slots=True)
class Thresholds:
    max_error_rate: float
    min_requests: int
    max_latency: float  # p99 in seconds; 0 = no absolute bound
    latency_factor: float  # times the baseline's p99; 0 = no relative bound
    latency_floor: float  # a p99 under this is never a breach by factor

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def thresholds_from(doc: Any, default: Thresholds) -> Thresholds:
    if not isinstance(doc, dict):
        return default
    return Thresholds(
        float(doc.get("max_error_rate", default.max_error_rate)),
        int(doc.get("min_requests", default.min_requests)),
        float(doc.get("max_latency", default.max_latency)),
        float(doc.get("latency_factor", default.latency_factor)),
        float(doc.get("latency_floor", default.latency_floor)),
    )


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def describe(system: str, t: Traffic, bounds: Sequence[float]) -> str:
    """`b: 3 of 120 token requests failed (2.5 %), p99 12 ms`."""
    if t.requests == 0:
        return f"{system}: no token requests yet"
    line = f"{system}: {t.failures} of {t.requests} token requests failed ({t.share:.1%})"
    p99 = t.p99(bounds)
    return line + (f", p99 {ms(p99)}" if p99 is not None else "")


def error_breach(current: Traffic, baseline: Traffic | None, t: Thresholds) -> str | None:
    """Why the failed share is a breach, or None."""
    if current.requests < t.min_requests or current.share < t.max_error_rate:
        return None
    if (
        baseline is not None
        and baseline.requests >= t.min_requests
        and current.share <= baseline.share
    ):
        return None  # the old system failed as often: going back would not help
    return f"failed share {current.share:.1%} >= {t.max_error_rate:.1%}"


def latency_breach(
    current: Traffic, baseline: Traffic | None, t: Thresholds, bounds: Sequence[float]
) -> str | None:
    """Why the p99 is a breach, or None. Needs `min_requests` answers to judge at all."""
    if current.answered < t.min_requests:
        return None
    p99 = current.p99(bounds)
    if p99 is None:
        return None
    base = None
    if baseline is not None and baseline.answered >= t.min_requests:
        base = baseline.p99(bounds)
    if t.max_latency > 0 and p99 > t.max_latency and (base is None or p99 > base):
        return f"p99 {ms(p99)} > {ms(t.max_latency)}"
    if t.latency_factor > 0 and base is not None:
        bound = t.latency_factor * max(base, t.latency_floor)
        if p99 > bound:
            return f"p99 {ms(p99)} > {t.latency_factor:g} x the baseline's {ms(base)}" + (
                f" (floor {ms(t.latency_floor)})" if base < t.latency_floor else ""
            )
    return None


def breaches(
    current: Traffic, baseline: Traffic | None, t: Thresholds, bounds: Sequence[float]
) -> list[str]:
    found = [error_breach(current, baseline, t), latency_breach(current, baseline, t, bounds)]
    return [why for why in found if why is not None]


# --- the ledger's slots -----------------------------------------------------------------------


def sum_slots(
    slots: Mapping[int, Mapping[str, Traffic]], system: str, first: int, last: int
) -> Traffic:
    """`system`'s traffic in the ledger's one-second slots first..last (inclusive)."""
    total = Traffic()
    for slot in range(first, last + 1):
        found = slots.get(slot, {}).get(system)
        if found is not None:
            total = total + found
    return total


def recent(
    slots: Mapping[int, Mapping[str, Traffic]],
    system: str,
    *,
    start: int,
    now: int,
    span: int,
    min_requests: int,
) -> tuple[Traffic, int]:
    """The last `span` slots up to `now` (never before `start`), reaching further back, to
    `start` at most, until they hold `min_requests` token requests. (figures, first slot)."""
    first = max(start, now - span + 1)
    total = sum_slots(slots, system, first, now)
    while total.requests < min_requests and first > start:
        first -= 1
        found = slots.get(first, {}).get(system)
        if found is not None:
            total = total + found
    return total, first


# --- the document -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Watch:
    id: str  # the id of the audit entry of the change it watches
    system: str  # the new active system
    previous: str  # the system active before the change (what an undo goes back to)
    action: str  # how the change was made: switch, undo, promote (by token-router), or a bare SET
    source: str  # who made it
    started: float  # when it was made
    until: float  # started + post_switch_watch
    span: float  # seconds of recent traffic judged at each tick
    thresholds: Thresholds
    can_undo: bool  # False when the old system was offline at the change: alarm only
    state: str = WATCHING
    baseline: Traffic | None = None  # the previous system's traffic before the change
    baseline_from: float = 0.0
    current: Traffic = field(default_factory=Traffic)  # the last figures judged
    current_from: float = 0.0
    checked: float = 0.0
    ended_at: float | None = None
    reason: str = ""  # why it ended (the evidence of an undo or alarm)

    @property
    def watching(self) -> bool:
        return self.state == WATCHING

    def left(self, now: float) -> float:
        return max(0.0, self.until - now) if self.watching else 0.0

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["baseline"] = None if self.baseline is None else self.baseline.to_json()
        doc["current"] = self.current.to_json()
        return doc

    def dumps(self) -> str:
        return orjson.dumps(self.to_json()).decode()


def loads(raw: str | None, default: Thresholds) -> Watch | None:
    """The stored document, or None when there is none or it cannot be read."""
    if not raw:
        return None
    try:
        doc = orjson.loads(raw)
        return Watch(
            id=str(doc["id"]),
            system=str(doc["system"]),
            previous=str(doc["previous"]),
            action=str(doc.get("action", "switch")),
            source=str(doc.get("source", "")),
            started=float(doc["started"]),
            until=float(doc["until"]),
            span=float(doc.get("span", 60.0)),
            thresholds=thresholds_from(doc.get("thresholds"), default),
            can_undo=bool(doc.get("can_undo", True)),
            state=str(doc["state"]),
            baseline=traffic_from(doc.get("baseline")),
            baseline_from=float(doc.get("baseline_from", 0.0)),
            current=traffic_from(doc.get("current")) or Traffic(),
            current_from=float(doc.get("current_from", 0.0)),
            checked=float(doc.get("checked", 0.0)),
            ended_at=None if doc.get("ended_at") is None else float(doc["ended_at"]),
            reason=str(doc.get("reason", "")),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Change:
    """A change of the active system as the audit stream recorded it."""

    id: str
    action: str
    source: str
    from_: str
    to: str
    time: float
    reason: str = ""


def last_change(entries: Iterable[Change]) -> Change | None:
    """The newest change of the active system among audit entries (newest first)."""
    return next((e for e in entries if e.action in CHANGES and e.to), None)


def should_watch(
    change: Change | None,
    current: Watch | None,
    *,
    active: str,
    known: Sequence[str],
    window: float,
    now: float,
) -> bool:
    """Whether `change` gets a new watch: it is what routes now, between two configured
    systems, recent, not yet watched, and not the watch's own undo."""
    if change is None or window <= 0 or change.to != active:
        return False
    if current is not None and current.id == change.id:
        return False
    if change.action == AUTO_UNDO or change.from_ == change.to:
        return False
    if change.from_ not in known or change.to not in known:
        return False
    return now < change.time + window


def new_watch(
    change: Change,
    *,
    window: float,
    span: float,
    thresholds: Thresholds,
    previous_offline: bool,
    baseline: Traffic,
    baseline_from: float,
) -> Watch:
    return Watch(
        id=change.id,
        system=change.to,
        previous=change.from_,
        action=change.action,
        source=change.source,
        started=change.time,
        until=change.time + window,
        span=span,
        thresholds=thresholds,
        can_undo=not previous_offline,
        baseline=baseline,
        baseline_from=baseline_from,
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the leader does with a watch now: "undo", "alarm", "pass" or "measure" (only
    record the figures), and the words for the audit and every surface."""

    kind: str
    evidence: str


def verdict(
    w: Watch, now: float, current: Traffic, current_from: float, bounds: Sequence[float]
) -> Verdict | None:
    """The leader's one decision per tick for a watch; None when it is over."""
    if not w.watching:
        return None
    found = breaches(current, w.baseline, w.thresholds, bounds)
    if found:
        return Verdict(
            "undo" if w.can_undo else "alarm",
            evidence(w, current, current_from, now, found, bounds),
        )
    if now >= w.until:
        return Verdict("pass", evidence(w, current, current_from, now, [], bounds))
    return Verdict("measure", "")


def evidence(
    w: Watch,
    current: Traffic,
    current_from: float,
    now: float,
    found: Sequence[str],
    bounds: Sequence[float],
) -> str:
    """One line: what breached, the figures on both sides and the window they cover."""
    head = "; ".join(found) if found else "no threshold breached"
    seconds = max(0.0, now - current_from)
    measured = f"{describe(w.system, current, bounds)} in the {seconds:.0f} s measured"
    base = "no baseline"
    if w.baseline is not None:
        base = (
            f"{describe(w.previous, w.baseline, bounds)} in the "
            f"{max(0.0, w.started - w.baseline_from):.0f} s before the switch"
        )
    window = f"watch window {w.until - w.started:g} s from {w.action} {w.previous} -> {w.system}"
    return f"{head}: {measured}; {base}; {window}"


def measured(w: Watch, current: Traffic, current_from: float, now: float) -> Watch:
    return replace(w, current=current, current_from=current_from, checked=now)


def ended(w: Watch, state: str, now: float, reason: str) -> Watch:
    return replace(w, state=state, ended_at=now, reason=reason)


# --- the words every surface shows ---------------------------------------------------------


def view(w: Watch | None, now: float, bounds: Sequence[float]) -> dict[str, Any] | None:
    """`/api/status`'s `watch`, `status` and the page: the document plus what it measures
    in words and the time left."""
    if w is None:
        return None
    doc = w.to_json()
    doc["left"] = round(w.left(now), 1)
    doc["window"] = w.until - w.started
    doc["current_p99"] = w.current.p99(bounds)
    doc["baseline_p99"] = None if w.baseline is None else w.baseline.p99(bounds)
    doc["measures"] = measures(w)
    doc["line"] = line(w, now, bounds)
    return doc


def line(w: Watch, now: float, bounds: Sequence[float]) -> str:
    """One line for `status`, the page and `upgrade`."""
    figures = describe(w.system, w.current, bounds) if w.checked else "no figures yet"
    if w.watching:
        return (
            f"watching {w.system} after {w.action} {w.previous} -> {w.system}: {figures}; "
            f"{w.left(now):.0f} s left" + ("" if w.can_undo else " (alarm only: no undo)")
        )
    if w.state == PASSED:
        return f"the watch of {w.system} passed: {figures}"
    if w.state == UNDONE:
        return f"UNDONE by the watch: {w.system} -> {w.previous}: {w.reason}"
    if w.state == ALARM:
        return f"ALARM: {w.system} breached the watch and was not undone: {w.reason}"
    return f"the watch of {w.system} ended: {w.reason}"


def measures(w: Watch) -> str:
    """What the watch measures and where it acts, in words."""
    t = w.thresholds
    limits = []
    if t.max_latency:
        limits.append(f"above {ms(t.max_latency)}")
    if t.latency_factor:
        limits.append(f"above {t.latency_factor:g} x {w.previous}'s before the switch")
    p99 = "their p99" + (f" (abort {' or '.join(limits)})" if limits else "")
    return (
        f"failed share of token requests to {w.system} (abort at {t.max_error_rate:.1%}) and {p99}"
    )
