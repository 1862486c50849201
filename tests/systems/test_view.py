"""router/systems/view.py: the one view of the systems every surface renders."""

from __future__ import annotations

import pytest

from router.state import watch as watching
from router.state.rollout import Share
from router.state.snapshot import Snapshot
from router.systems.view import Observed, RolloutShare, build

SYSTEMS = (Observed("a", router_open=7), Observed("b", router_open=3))


def _rollout(target: str, percent: int) -> Share:
    return Share(target, percent / 100, "r1", 0)


@pytest.mark.parametrize(
    ("snapshot", "headline", "badges", "shares"),
    [
        (Snapshot("a"), "new sessions go to a", ["active", "draining"], [100, 0]),
        (Snapshot("b"), "new sessions go to b", ["draining", "active"], [0, 100]),
        (
            Snapshot("b", rollout=_rollout("a", 20)),
            "rollout b -> a: 20 % of new sessions to a",
            ["rollout target 20 %", "active 80 %"],
            [20, 80],
        ),
        (
            # Step 3/3 of b -> a: the page said "New sessions go to b", A "draining", B "active".
            Snapshot("b", rollout=_rollout("a", 100)),
            "rollout b -> a: 100 % of new sessions to a",
            ["rollout target 100 %", "active 0 %"],
            [100, 0],
        ),
        (
            Snapshot("a", offline=frozenset({"b"})),
            "new sessions go to a",
            ["active", "offline + draining"],
            [100, 0],
        ),
        # A share naming the active system itself (a stale document) is no rollout.
        (
            Snapshot("a", rollout=_rollout("a", 50)),
            "new sessions go to a",
            ["active", "draining"],
            [100, 0],
        ),
    ],
    ids=["a-active", "b-active", "rollout-20", "rollout-100", "offline", "share-of-active"],
)
def test_states_shares_and_headline(
    snapshot: Snapshot, headline: str, badges: list[str], shares: list[int]
) -> None:
    v = build(snapshot, SYSTEMS, {}, 100.0)
    assert v.headline == headline
    assert [d.badge for d in v.systems] == badges
    assert [d.share for d in v.systems] == shares
    assert sum(shares) == 100
    assert not any(d.drained for d in v.systems if "rollout" in d.states)


def test_rollout_share_in_json() -> None:
    v = build(Snapshot("b", rollout=_rollout("a", 20)), SYSTEMS, {}, 100.0)
    assert v.rollout == RolloutShare("b", "a", 20)
    assert v.to_json() == {
        "headline": "rollout b -> a: 20 % of new sessions to a",
        "rollout_share": {"source": "b", "target": "a", "percent": 20},
        "watch": None,
    }
    assert build(Snapshot("a"), SYSTEMS, {}, 1.0).to_json()["rollout_share"] is None


def test_the_post_switch_watch_is_part_of_the_view() -> None:
    limits = watching.Thresholds(0.05, 20, 2.0, 3.0, 0.1)
    change = watching.Change("1-0", "promote", "rollout controller", "a", "b", 1000.0)
    w = watching.new_watch(
        change,
        window=600.0,
        span=60.0,
        thresholds=limits,
        previous_offline=False,
        baseline=watching.Traffic(),
        baseline_from=400.0,
    )
    doc = build(Snapshot("b"), SYSTEMS, {}, 1100.0, watch=w).to_json()["watch"]
    assert doc["state"] == "watching" and doc["left"] == 500.0
    assert doc["line"] == "watching b after promote a -> b: no figures yet; 500 s left"
    assert doc["measures"] == (
        "failed share of token requests to b (abort at 5.0%) and their p99 (abort above "
        "2000 ms or above 3 x a's before the switch)"
    )


def test_trend_and_stall_come_from_the_samples_given() -> None:
    samples = {"b": [(0.0, 30), (5.0, 20), (10.0, 10)], "a": [(0.0, 7), (200.0, 7)]}
    v = build(Snapshot("c"), SYSTEMS, samples, 10.0, stall_after=120.0)
    b = v.system("b")
    assert b.rate == pytest.approx(2.0)
    assert b.estimate == "falling 120.0/min, ~5 s to 0"
    stalled = build(Snapshot("c"), SYSTEMS, samples, 200.0, stall_after=120.0).system("a")
    assert stalled.states == ("draining", "stalled")
    assert build(Snapshot("c"), SYSTEMS, samples, 200.0, stall_after=0).system("a").states == (
        "draining",
    )
