"""router/systems/drain.py: the one drain decision, its trend, and the history that feeds it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from router.systems.drain import (
    SAMPLE_RESOLUTION,
    STATES,
    TREND_WINDOW,
    Drain,
    DrainFacts,
    DrainHistory,
    Sample,
    deciding_count,
    describe,
    drain,
    format_eta,
    trend,
)

IDLE = DrainFacts(system="a")


@pytest.mark.parametrize(
    ("facts", "states", "open_", "source", "drained"),
    [
        (DrainFacts("a", active=True, router_open=5), ("active",), 5, "router", False),
        (DrainFacts("a", active=True, router_open=0), ("active",), 0, "router", False),
        (DrainFacts("a", router_open=3), ("draining",), 3, "router", False),
        (DrainFacts("a", router_open=0), ("drained",), 0, "router", True),
        (DrainFacts("a", router_open=None), ("draining",), None, "unknown", False),
        (
            DrainFacts("a", router_open=0, stats_configured=True, gateway_open=4),
            ("draining",),
            4,
            "gateway",
            False,
        ),
        (
            DrainFacts("a", router_open=9, stats_configured=True, gateway_open=0),
            ("drained",),
            0,
            "gateway",
            True,
        ),
        (
            DrainFacts("a", router_open=0, stats_configured=True, gateway_error="timeout"),
            ("draining",),
            None,
            "unknown",
            False,
        ),
        (
            DrainFacts("a", previewing=True, router_open=2),
            ("preview", "draining"),
            2,
            "router",
            False,
        ),
        (
            DrainFacts("a", previewing=True, router_open=0),
            ("preview", "drained"),
            0,
            "router",
            True,
        ),
        (DrainFacts("a", offline=True, router_open=1), ("offline", "draining"), 1, "router", False),
        (DrainFacts("a", offline=True, router_open=0), ("offline", "drained"), 0, "router", True),
        (
            DrainFacts("a", active=True, offline=True, router_open=0),
            ("offline", "active"),
            0,
            "router",
            False,
        ),
        (
            DrainFacts("a", active=True, previewing=True, router_open=0),
            ("active",),
            0,
            "router",
            False,
        ),
    ],
    ids=[
        "active",
        "active-empty-is-not-drained",
        "draining",
        "drained",
        "store-away-never-drained",
        "gateway-count-decides-up",
        "gateway-count-decides-down",
        "gateway-count-failed",
        "preview-and-draining",
        "preview-and-drained",
        "offline-draining",
        "offline-drained",
        "offline-active",
        "active-preview-is-active",
    ],
)
def test_drain_decision(
    facts: DrainFacts, states: tuple[str, ...], open_: int | None, source: str, drained: bool
) -> None:
    d = drain(facts)
    assert (d.states, d.open, d.source, d.drained) == (states, open_, source, drained)
    assert d.state == states[0]
    assert set(d.states) <= set(STATES)
    assert d.router_open == facts.router_open


def test_deciding_count() -> None:
    assert deciding_count(DrainFacts("a", router_open=2)) == (2, "router")
    assert deciding_count(DrainFacts("a", router_open=2, stats_configured=True)) == (
        None,
        "unknown",
    )


@pytest.mark.parametrize(
    ("samples", "now", "rate", "eta"),
    [
        ([], 100.0, None, None),
        ([(100.0, 5)], 100.0, None, None),
        ([(99.0, 6), (100.0, 5)], 100.0, None, None),  # under TREND_MIN_SPAN: says nothing
        ([(90.0, 20), (100.0, 10)], 100.0, 1.0, 10.0),
        ([(80.0, 30), (90.0, 20), (100.0, 10)], 100.0, 1.0, 10.0),
        ([(90.0, 10), (100.0, 20)], 100.0, -1.0, None),  # rising: no estimate
        ([(90.0, 10), (100.0, 10)], 100.0, 0.0, None),  # flat: no estimate
        ([(90.0, 4), (100.0, 0)], 100.0, 0.4, 0.0),  # reached 0
        ([(100.0, 0)], 100.0, None, 0.0),
        ([(-50.0, 100), (90.0, 20), (100.0, 10)], 100.0, 1.0, 10.0),  # old sample out of window
    ],
    ids=[
        "none",
        "one",
        "too-short",
        "falling",
        "falling-3",
        "rising",
        "flat",
        "zero",
        "zero-one-sample",
        "window",
    ],
)
def test_trend(
    samples: list[tuple[float, int]], now: float, rate: float | None, eta: float | None
) -> None:
    t = trend(samples, now)
    if rate is None:
        assert t.rate is None
    else:
        assert t.rate == pytest.approx(rate)
    if eta is None:
        assert t.eta is None
    else:
        assert t.eta == pytest.approx(eta)


def test_drain_carries_trend() -> None:
    d = drain(DrainFacts("b", router_open=10), [(90.0, 20), (100.0, 10)], 100.0)
    assert d.rate == pytest.approx(1.0)
    assert d.eta == pytest.approx(10.0)
    assert d.to_json()["drain_eta"] == 10.0
    # No deciding count, no trend: an estimate over nothing would mislead.
    unknown = drain(DrainFacts("b"), [(90.0, 20), (100.0, 10)], 100.0)
    assert (unknown.rate, unknown.eta) == (None, None)


def test_history_bounded_by_retention_and_skips_unknown() -> None:
    history = DrainHistory(stall_after=10.0)
    assert history.retention == TREND_WINDOW + 2.0
    history.add("a", 0.0, 5)
    history.add("a", 5.0, None)
    history.add("a", 8.0, 4)
    history.add("a", 200.0, 3)
    assert history.samples("a") == [(8.0, 4), (200.0, 3)]  # the newest before the retention
    history.add("a", 330.0, 3)
    assert history.samples("a") == [(200.0, 3), (330.0, 3)]
    assert history.samples("b") == []


def test_history_sampled_rarely_still_sees_a_stall() -> None:
    """A Prometheus scrape every 30 s is the only reader: the stall still shows."""
    history = DrainHistory(stall_after=120.0)
    for t in range(0, 301, 30):
        history.add("a", float(t), 5)
    assert trend(history.samples("a"), 300.0, 120.0).stalled_for is not None


def test_history_keeps_a_long_enough_past_for_a_stall() -> None:
    assert DrainHistory(stall_after=600.0).retention == 602.0


def test_history_thins_samples_closer_than_the_resolution() -> None:
    """Many readers sampling at once (pages, scripts, scrapes) keep one point per second,
    always with the newest count; an older count arriving late is dropped."""
    history = DrainHistory()
    for i in range(50):
        history.add("a", 100.0 + i * 0.1, 50 - i)
    history.add("a", 104.0, 99)
    points = history.samples("a")
    assert points[-1] == (104.9, 1)
    assert all(b[0] - a[0] >= SAMPLE_RESOLUTION for a, b in zip(points, points[1:-1], strict=False))
    assert len(points) <= 7


def _series(
    start: float, end: float, count: Callable[[float], int], step: float = 1.0
) -> list[Sample]:
    out = []
    t = start
    while t <= end + 1e-9:
        out.append((t, count(t)))
        t += step
    return out


@pytest.mark.parametrize("step", [1.0, 2.0], ids=["sampled-1s", "sampled-2s"])
def test_rate_follows_a_real_fall_within_seconds(step: float) -> None:
    """Flat at 100 for a minute, then 2 calls end a second (brokers shut down): five seconds
    into the fall the rate is the real one and the estimate the real time left (the old
    two-minute fit said 124 s when 16 s were left)."""
    samples = _series(
        0.0, 120.0, lambda t: 100 if t < 60 else max(0, int(100 - 2 * (t - 60))), step
    )
    for seconds in (6.0, 10.0, 20.0, 42.0):
        now = 60.0 + seconds
        t = trend([p for p in samples if p[0] <= now], now)
        left = (100 - 2 * seconds) / 2
        assert t.rate == pytest.approx(2.0, rel=0.05), seconds
        assert t.eta == pytest.approx(left, rel=0.1, abs=1.0), seconds


def test_rate_averages_single_calls_ending() -> None:
    """One call ending every 10 s: the rate stays near 6/min, not 0 and 12 by turns."""
    samples = _series(0.0, 300.0, lambda t: 50 - int(t // 10))
    rates = [trend([p for p in samples if p[0] <= now], now).rate for now in range(90, 300)]
    assert all(r is not None and 0.085 <= r <= 0.115 for r in rates)


@pytest.mark.parametrize(
    ("series", "now", "stalled_for"),
    [
        ([(0.0, 5), (60.0, 5), (130.0, 5)], 130.0, 130.0),
        ([(0.0, 5), (60.0, 5), (119.0, 5)], 119.0, None),  # not watched long enough
        ([(0.0, 5), (60.0, 4), (130.0, 4)], 130.0, None),  # fell 70 s ago
        ([(0.0, 6), (20.0, 5), (150.0, 5)], 150.0, 130.0),
        ([(0.0, 9), (20.0, 9), (200.0, 9)], 200.0, 200.0),
        ([(0.0, 0), (200.0, 0)], 200.0, None),  # drained, not stalled
        # Rose while it was active, falls now: draining, not stalled.
        ([(0.0, 10), (100.0, 50), (150.0, 45), (170.0, 40)], 170.0, None),
    ],
    ids=[
        "flat",
        "too-early",
        "fell-recently",
        "fell-long-ago",
        "flat-long",
        "zero",
        "rose-then-fell",
    ],
)
def test_stall(series: list[Sample], now: float, stalled_for: float | None) -> None:
    t = trend(series, now, stall_after=120.0)
    assert t.stalled_for == stalled_for
    if stalled_for is not None:
        assert t.eta is None  # a stalled drain promises no end


def test_stall_after_zero_never_stalls() -> None:
    assert trend([(0.0, 5), (1000.0, 5)], 1000.0, stall_after=0.0).stalled_for is None


def test_stalled_is_a_state_of_a_draining_system_only() -> None:
    flat = [(0.0, 3), (200.0, 3)]
    d = drain(DrainFacts("a", router_open=3), flat, 200.0, stall_after=120.0)
    assert d.states == ("draining", "stalled")
    assert d.stalled and d.stalled_for == 200.0
    assert d.estimate == "stalled: no fall for 3 min"
    assert d.to_json()["stalled"] is True
    busy = drain(DrainFacts("a", active=True, router_open=3), flat, 200.0, stall_after=120.0)
    assert busy.states == ("active",) and not busy.stalled


@pytest.mark.parametrize(
    ("facts", "states", "share", "badge"),
    [
        (DrainFacts("a", active=True, router_open=4), ("active",), 100, "active"),
        (
            DrainFacts("a", active=True, router_open=4, share=80),
            ("active",),
            80,
            "active 80 %",
        ),
        (
            DrainFacts("b", rollout_target=True, router_open=4, share=20),
            ("rollout",),
            20,
            "rollout target 20 %",
        ),
        (
            DrainFacts("b", rollout_target=True, previewing=True, router_open=0, share=100),
            ("rollout",),
            100,
            "rollout target 100 %",
        ),
        (DrainFacts("b", router_open=2), ("draining",), 0, "draining"),
    ],
    ids=["active", "active-in-rollout", "target", "target-empty-is-not-drained", "draining"],
)
def test_rollout_states(facts: DrainFacts, states: tuple[str, ...], share: int, badge: str) -> None:
    d = drain(facts)
    assert (d.states, d.share, d.badge) == (states, share, badge)
    assert not d.drained or "draining" not in states


@pytest.mark.parametrize(
    ("kw", "estimate"),
    [
        ({}, "falling 3.0/min, ~60 s to 0"),
        ({"rate": -0.1, "eta": None}, "rising 6.0/min"),
        ({"rate": 0.0, "eta": None}, "steady"),
        ({"rate": None, "eta": None}, "measuring the rate"),
        ({"open": None, "source": "unknown"}, "count unknown"),
        ({"open": 0, "drained": True, "states": ("drained",)}, "drained"),
        ({"stalled_for": 150.0, "states": ("draining", "stalled")}, "stalled: no fall for 2 min"),
        ({"states": ("active",), "share": 100}, ""),
        ({"states": ("active",), "share": 0}, "falling 3.0/min, ~60 s to 0"),
    ],
)
def test_estimate_words(kw: dict[str, object], estimate: str) -> None:
    assert _d(**kw).estimate == estimate


def _d(**kw: object) -> Drain:
    base = {
        "system": "a",
        "states": ("draining",),
        "open": 3,
        "source": "gateway",
        "router_open": 2,
        "gateway_open": 3,
        "gateway_error": "",
        "drained": False,
        "rate": 0.05,
        "eta": 60.0,
    }
    base.update(kw)
    return Drain(**base)  # type: ignore[arg-type]


def test_describe() -> None:
    assert describe(_d()) == (
        "draining, 3 open (gateway), router count 2, falling 3.0/min, ~60 s to 0"
    )
    assert describe(_d(states=("preview", "draining"), rate=-0.1, eta=None)).startswith(
        "preview + draining, 3 open (gateway), router count 2, rising 6.0/min"
    )
    text = describe(_d(open=None, source="unknown", gateway_error="timeout", rate=None, eta=None))
    assert text == "draining, ? open (unknown), gateway count unavailable: timeout"


@pytest.mark.parametrize(
    ("seconds", "text"), [(5, "5 s"), (89, "89 s"), (600, "10 min"), (7200, "2.0 h")]
)
def test_format_eta(seconds: float, text: str) -> None:
    assert format_eta(seconds) == text


def test_a_drain_starts_its_history_when_new_sessions_stop() -> None:
    """Risen while active, flat since the switch: steady, not "rising"."""
    history = DrainHistory()
    for t in range(10):
        history.add("a", float(t), t, receiving=True)
    for t in range(10, 30):
        history.add("a", float(t), 9)
    assert history.samples("a")[0] == (10.0, 9)
    d = drain(DrainFacts("a", router_open=9), history.samples("a"), 29.0)
    assert d.estimate == "steady"
