"""Is a system drained, and how fast is it draining? The one decision every surface shares:
page, `/api/status`, `/api/live`, CLI `status` (and `--watch`), `drain-wait`, `upgrade` and
`/metrics` (router/systems/view.py puts the systems together with the rollout's share).

Pure functions over plain data (counts already read, timestamps passed in), so the surfaces
can only differ in what they show, never in what they conclude:
- where the system's gateway reports its own open-session count (`stats_url`), that count
  decides and the router's count is shown beside it, labelled;
- without `stats_url`, the router's count (tokens it issued and short codes within
  `shortcode_ttl`, not yet released) decides;
- an unknown deciding count (store away, stats_url not answering) is never "drained";
- a system that receives new sessions (the active one, a rollout's target) is not draining.
The trend comes from samples the caller keeps (`DrainHistory`): the rate at which the count
falls (one sign everywhere: positive falls, negative rises; text says "falling"/"rising"),
an estimate of when it reaches 0, and "stalled" when it has not fallen for `stall_after`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# Every word a system's state can contain. Several may hold at once (preview + draining,
# draining + stalled). "rollout": the target of a running rollout, taking its share.
STATES = ("active", "rollout", "draining", "stalled", "drained", "offline", "preview")
Source = Literal["gateway", "router", "unknown"]
Sample = tuple[float, int]

# The rate is a least-squares slope over the shortest of these windows in which the count
# moved by at least TREND_MIN_CHANGE items: a fast fall (brokers shut down) is followed within
# seconds, single calls ending one by one are averaged over up to two minutes. One fixed long
# window lagged: the API said 124 s to 0 when 16 s were left (issue 24).
TREND_WINDOWS = (5.0, 10.0, 20.0, 40.0, 80.0, 120.0)
TREND_WINDOW = TREND_WINDOWS[-1]
TREND_MIN_CHANGE = 5
# Below this many seconds of samples the rate says nothing yet.
TREND_MIN_SPAN = 4.0
# Seconds without a fall after which a draining system is "stalled" (router.drain_stall_after).
DEFAULT_STALL_AFTER = 120.0
# Samples closer together than this are thinned (the newest one is always kept): several
# pages, scripts and scrapes sampling at once must not push the window out of the history.
SAMPLE_RESOLUTION = 1.0


@dataclass(frozen=True, slots=True)
class DrainFacts:
    """What is known about one system at one moment."""

    system: str
    active: bool = False
    offline: bool = False
    previewing: bool = False
    router_open: int | None = None  # the routers' count; None when the store did not answer
    stats_configured: bool = False  # the system has a stats_url
    gateway_open: int | None = None  # the gateway's own count; None when absent or failed
    gateway_error: str = ""  # why gateway_open is missing although stats_url is configured
    rollout_target: bool = False  # a running (or paused) rollout sends it a share
    share: int | None = None  # percent of new sessions it gets; None: 100 if active, else 0


@dataclass(frozen=True, slots=True)
class Trend:
    rate: float | None  # items per second the count falls (negative: it rises); None: unknown
    eta: float | None  # seconds until the count reaches 0 at that rate; None: not falling
    stalled_for: float | None = None  # seconds without a fall, once >= stall_after

    @property
    def stalled(self) -> bool:
        return self.stalled_for is not None


@dataclass(frozen=True, slots=True)
class Drain:
    system: str
    states: tuple[str, ...]  # e.g. ("preview", "draining"); the first is the headline word
    open: int | None  # the deciding count
    source: Source  # which count decided
    router_open: int | None
    gateway_open: int | None
    gateway_error: str
    drained: bool
    rate: float | None
    eta: float | None
    share: int = 0  # percent of new sessions this system gets now
    stalled_for: float | None = None  # seconds the count has not fallen (only when stalled)

    @property
    def state(self) -> str:
        return self.states[0]

    @property
    def stalled(self) -> bool:
        return self.stalled_for is not None

    @property
    def receives(self) -> bool:
        """It gets new sessions (active, or a rollout's target): not draining."""
        return "active" in self.states or "rollout" in self.states

    @property
    def estimate(self) -> str:
        """The trend in words, the same on every surface ("" while it takes new sessions
        and its count says nothing about an end)."""
        if self.open is None:
            return "count unknown"
        if self.drained:
            return "drained"
        if self.stalled_for is not None:
            return f"stalled: no fall for {format_eta(self.stalled_for)}"
        if self.receives and self.share > 0:
            return ""
        if self.open == 0:
            return "0 open"
        if self.rate is None:
            return "measuring the rate"
        if self.rate > 0:
            text = f"falling {format_rate(self.rate)}"
            return text if self.eta is None else f"{text}, ~{format_eta(self.eta)} to 0"
        if self.rate < 0:
            return f"rising {format_rate(-self.rate)}"
        return "steady"

    @property
    def badge(self) -> str:
        """The state words as the page's badge and `status`'s STATE column show them."""
        words = []
        for s in self.states:
            if s == "rollout":
                words.append(f"rollout target {self.share} %")
            elif s == "active" and self.share < 100:
                words.append(f"active {self.share} %")
            else:
                words.append(s)
        return " + ".join(words)

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "state": self.state,
            "states": list(self.states),
            "badge": self.badge,
            "share": self.share,
            "drained": self.drained,
            "open": self.open,
            "source": self.source,
            "router_open": self.router_open,
            "gateway_open": self.gateway_open,
            "gateway_error": self.gateway_error or None,
            # "drain_" because the page's document also carries request rates as "rate".
            "drain_rate": None if self.rate is None else round(self.rate, 4),
            "drain_eta": None if self.eta is None else round(self.eta, 1),
            "stalled": self.stalled,
            "stalled_for": None if self.stalled_for is None else round(self.stalled_for, 1),
            "estimate": self.estimate,
        }


def deciding_count(facts: DrainFacts) -> tuple[int | None, Source]:
    """The count that decides and where it comes from."""
    if facts.stats_configured:
        if facts.gateway_open is None:
            return None, "unknown"
        return facts.gateway_open, "gateway"
    if facts.router_open is None:
        return None, "unknown"
    return facts.router_open, "router"


def trend(samples: Iterable[Sample], now: float, stall_after: float = DEFAULT_STALL_AFTER) -> Trend:
    """Rate, estimate and stall of the deciding count from its samples (time, count).

    The rate is the least-squares slope over the shortest window of TREND_WINDOWS in which
    the count moved by TREND_MIN_CHANGE (else the longest); the estimate is count / rate from
    the newest sample, only while the count falls; at 0 it is 0. Stalled: the count is above
    0 and has not fallen for `stall_after` seconds of samples.
    """
    points = [(t, n) for t, n in samples if t <= now]
    if not points:
        return Trend(None, None)
    last = points[-1][1]
    stalled_for = _stalled_for(points, now, stall_after) if last > 0 else None
    window = _window(points, now)
    if last == 0:
        return Trend(None if len(window) < 2 else _rate(window), 0.0)
    if len(window) < 2 or window[-1][0] - window[0][0] < TREND_MIN_SPAN:
        return Trend(None, None, stalled_for)
    rate = _rate(window)
    if rate is None or rate <= 0 or stalled_for is not None:
        return Trend(rate, None, stalled_for)
    return Trend(rate, last / rate)


def _window(points: Sequence[Sample], now: float) -> list[Sample]:
    for seconds in TREND_WINDOWS:
        recent = [(t, n) for t, n in points if t >= now - seconds]
        counts = [n for _, n in recent]
        if len(recent) >= 2 and max(counts) - min(counts) >= TREND_MIN_CHANGE:
            return recent
    return [(t, n) for t, n in points if t >= now - TREND_WINDOW]


def _stalled_for(points: Sequence[Sample], now: float, stall_after: float) -> float | None:
    """Seconds since the count last fell, if at least `stall_after`. Only over samples that
    cover `stall_after`: no stall is claimed before that long was watched. A fall, not a new
    low: a system that rose while it was active and falls now is draining, not stalled."""
    if stall_after <= 0 or points[0][0] > now - stall_after:
        return None
    fell_at = points[0][0]
    for (_, before), (t, n) in zip(points, points[1:], strict=False):
        if n < before:
            fell_at = t
    quiet = now - fell_at
    return quiet if quiet >= stall_after else None


def _rate(points: Sequence[Sample]) -> float | None:
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_c = sum(c for _, c in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var <= 0:
        return None
    slope = sum((t - mean_t) * (c - mean_c) for t, c in points) / var
    return -slope


def drain(
    facts: DrainFacts,
    samples: Iterable[Sample] = (),
    now: float = 0.0,
    stall_after: float = DEFAULT_STALL_AFTER,
) -> Drain:
    """The state of one system: the one function every surface calls."""
    count, source = deciding_count(facts)
    share = facts.share if facts.share is not None else (100 if facts.active else 0)
    receives = facts.active or facts.rollout_target
    states: list[str] = []
    if facts.offline:
        states.append("offline")
    if facts.active:
        states.append("active")
    elif facts.rollout_target:
        states.append("rollout")
    elif facts.previewing:
        states.append("preview")
    drained = not receives and count == 0
    t = trend(samples, now, stall_after) if count is not None else Trend(None, None)
    # Only a system that takes no new sessions can stall: a busy active one's count is
    # expected to hold steady.
    stalled_for = t.stalled_for if share == 0 and not drained else None
    if not receives:
        # An unknown count is reported as draining: never claim "safe to upgrade" unproven.
        states.append("drained" if drained else "draining")
        if stalled_for is not None:
            states.append("stalled")
    return Drain(
        system=facts.system,
        states=tuple(states),
        open=count,
        source=source,
        router_open=facts.router_open,
        gateway_open=facts.gateway_open,
        gateway_error=facts.gateway_error,
        drained=drained,
        rate=t.rate,
        eta=t.eta,
        share=share,
        stalled_for=stalled_for,
    )


class DrainHistory:
    """The deciding counts sampled over time, per system, for the trend. Bounded: samples
    older than `retention` go, and samples closer than SAMPLE_RESOLUTION are thinned."""

    def __init__(self, stall_after: float = DEFAULT_STALL_AFTER, size: int = 4096) -> None:
        self.stall_after = stall_after
        # The rate looks back TREND_WINDOW; a stall needs stall_after of samples before now.
        self.retention = max(TREND_WINDOW, stall_after) + SAMPLE_RESOLUTION * 2
        self._samples: dict[str, deque[Sample]] = {}
        self._receiving: dict[str, bool] = {}
        self._size = size

    def add(self, system: str, now: float, count: int | None, receiving: bool = False) -> None:
        """One reading of `system`'s deciding count. `receiving`: it takes new sessions now
        (active, a rollout's target); when that ends its drain begins, and the samples start
        anew: a count that rose while it was active says nothing about how it drains."""
        samples = self._samples.setdefault(system, deque(maxlen=self._size))
        if self._receiving.get(system) and not receiving:
            samples.clear()
        self._receiving[system] = receiving
        if count is None:
            return
        if samples and now < samples[-1][0]:
            return  # a late reader's older count must not reorder the series
        if len(samples) >= 2 and samples[-1][0] - samples[-2][0] < SAMPLE_RESOLUTION:
            samples.pop()  # keep the newest; the one before stays at least a resolution back
        samples.append((now, count))
        # Keep the newest sample from before the retention too: sampled every 30 s (a
        # Prometheus scrape), the history must still reach back `stall_after` to see a stall.
        while len(samples) > 1 and samples[1][0] <= now - self.retention:
            samples.popleft()

    def samples(self, system: str) -> list[Sample]:
        return list(self._samples.get(system, ()))


def describe(d: Drain) -> str:
    """One line for terminals: state, counts with their sources, trend."""
    count = "?" if d.open is None else str(d.open)
    parts = [f"{d.badge}, {count} open ({d.source})"]
    if d.source == "gateway" and d.router_open is not None:
        parts.append(f"router count {d.router_open}")
    if d.gateway_error:
        parts.append(f"gateway count unavailable: {d.gateway_error}")
    estimate = d.estimate
    if estimate and estimate not in ("drained", "count unknown", "0 open"):
        parts.append(estimate)
    return ", ".join(parts)


def format_rate(per_second: float) -> str:
    """Items per minute: calls end a few a minute, seconds would show 0.05."""
    return f"{per_second * 60:.1f}/min"


def format_eta(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def stall_advice(system: str, hint: str = "") -> list[str]:
    """What to do with a drain that does not end (docs/upgrades.md, 'A drain that does not
    end'), for drain-wait's timeout and the upgrade's drain step. `hint` is the command
    line's `--config ...`, so the commands shown run as they are."""
    return [
        "what to do with a drain that does not end (docs/upgrades.md):",
        f"  - see what holds {system}: `token-router open-items {system}{hint}` (tokens never "
        "deleted count until router.affinity_ttl)",
        "  - wait, if the calls are real: the count falls as they end",
        f"  - shut {system}'s Media Brokers down gracefully (its gateway ends the calls in order)",
        f'  - or `token-router offline {system} --force --reason "..."{hint}`: what still '
        f"belongs to {system} gets a 503 at once",
    ]


def format_age(seconds: float) -> str:
    """An item's age for terminals: 42 s, 17 min, 2h 14min, 3 d 4 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
