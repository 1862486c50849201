"""router/systems/drain.py: the one drain decision, its trend, and the history that feeds it."""

from __future__ import annotations

import pytest

from router.systems.drain import (
    STATES,
    Drain,
    DrainFacts,
    DrainHistory,
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


def test_history_bounded_by_window_and_skips_unknown() -> None:
    history = DrainHistory(window=10.0)
    history.add("a", 0.0, 5)
    history.add("a", 5.0, None)
    history.add("a", 8.0, 4)
    history.add("a", 20.0, 3)
    assert history.samples("a") == [(20.0, 3)]
    assert history.samples("b") == []


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
