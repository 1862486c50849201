"""Is a system drained? The one decision every surface shares: page, `/api/status`, CLI
`status` and `drain-wait`, and `/metrics`.

Pure functions over plain data (counts already read, timestamps passed in), so the surfaces
can only differ in what they show, never in what they conclude:
- where the system's gateway reports its own open-session count (`stats_url`), that count
  decides and the router's count is shown beside it, labelled;
- without `stats_url`, the router's count (tokens it issued and short codes within
  `shortcode_ttl`, not yet released) decides;
- an unknown deciding count (store away, stats_url not answering) is never "drained".
The trend (rate at which the count falls, estimate of when it reaches 0) comes from samples
the caller keeps (`DrainHistory`): the page's feed and `drain-wait` each sample as they go.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# Every word a system's state can contain. Several may hold at once (preview + draining).
STATES = ("active", "draining", "drained", "offline", "preview")
Source = Literal["gateway", "router", "unknown"]
Sample = tuple[float, int]

# The trend looks at the last two minutes: long enough to smooth single calls ending,
# short enough to follow a drain that speeds up when brokers are shut down.
TREND_WINDOW = 120.0
# Below this many seconds of samples the rate says nothing yet.
TREND_MIN_SPAN = 4.0


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


@dataclass(frozen=True, slots=True)
class Trend:
    rate: float | None  # items per second the count falls (negative: it rises); None: unknown
    eta: float | None  # seconds until the count reaches 0 at that rate; None: not falling


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

    @property
    def state(self) -> str:
        return self.states[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "state": self.state,
            "states": list(self.states),
            "drained": self.drained,
            "open": self.open,
            "source": self.source,
            "router_open": self.router_open,
            "gateway_open": self.gateway_open,
            "gateway_error": self.gateway_error or None,
            # "drain_" because the page's document also carries request rates as "rate".
            "drain_rate": None if self.rate is None else round(self.rate, 4),
            "drain_eta": None if self.eta is None else round(self.eta, 1),
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


def trend(samples: Iterable[Sample], now: float, window: float = TREND_WINDOW) -> Trend:
    """Least-squares slope of the deciding count over the last `window` seconds.

    Samples are (time, count). The estimate is count / rate from the newest sample, only
    while the count falls; at 0 it is 0.
    """
    recent = [(t, n) for t, n in samples if now - window <= t <= now]
    if not recent:
        return Trend(None, None)
    last = recent[-1][1]
    if last == 0:
        return Trend(None if len(recent) < 2 else _rate(recent), 0.0)
    if len(recent) < 2 or recent[-1][0] - recent[0][0] < TREND_MIN_SPAN:
        return Trend(None, None)
    rate = _rate(recent)
    if rate is None or rate <= 0:
        return Trend(rate, None)
    return Trend(rate, last / rate)


def _rate(points: Sequence[Sample]) -> float | None:
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_c = sum(c for _, c in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var <= 0:
        return None
    slope = sum((t - mean_t) * (c - mean_c) for t, c in points) / var
    return -slope


def drain(facts: DrainFacts, samples: Iterable[Sample] = (), now: float = 0.0) -> Drain:
    """The state of one system: the one function every surface calls."""
    count, source = deciding_count(facts)
    states: list[str] = []
    if facts.offline:
        states.append("offline")
    if facts.active:
        states.append("active")
    elif facts.previewing:
        states.append("preview")
    drained = not facts.active and count == 0
    if not facts.active:
        # An unknown count is reported as draining: never claim "safe to upgrade" unproven.
        states.append("drained" if drained else "draining")
    t = trend(samples, now) if count is not None else Trend(None, None)
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
    )


class DrainHistory:
    """The deciding counts sampled over time, per system, for the trend. Bounded."""

    def __init__(self, window: float = TREND_WINDOW, size: int = 512) -> None:
        self.window = window
        self._samples: dict[str, deque[Sample]] = {}
        self._size = size

    def add(self, system: str, now: float, count: int | None) -> None:
        samples = self._samples.setdefault(system, deque(maxlen=self._size))
        if count is None:
            return
        samples.append((now, count))
        while samples and samples[0][0] < now - self.window:
            samples.popleft()

    def samples(self, system: str) -> list[Sample]:
        return list(self._samples.get(system, ()))


def describe(d: Drain) -> str:
    """One line for terminals: state, counts with their sources, trend."""
    words = " + ".join(d.states)
    count = "?" if d.open is None else str(d.open)
    parts = [f"{words}, {count} open ({d.source})"]
    if d.source == "gateway" and d.router_open is not None:
        parts.append(f"router count {d.router_open}")
    if d.gateway_error:
        parts.append(f"gateway count unavailable: {d.gateway_error}")
    if d.rate is not None and d.rate > 0:
        parts.append(f"falling {d.rate * 60:.1f}/min")
    elif d.rate is not None and d.rate < 0:
        parts.append(f"rising {-d.rate * 60:.1f}/min")
    if d.eta is not None and d.eta > 0:
        parts.append(f"~{format_eta(d.eta)} to 0")
    return ", ".join(parts)


def format_eta(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
