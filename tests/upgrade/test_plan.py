"""The upgrade's decisions over plain data: refuse, finished, start, resume where."""

from __future__ import annotations

from dataclasses import replace

import pytest

from router.upgrade.plan import (
    EXIT_DONE,
    EXIT_REFUSED,
    EXIT_ROLLED_BACK,
    EXIT_USAGE,
    LEASE,
    Finished,
    Observed,
    Refuse,
    Request,
    RolloutFacts,
    Run,
    UpgradeRecord,
    decide,
    loads_record,
    steps_for,
    stop_advice,
    switch_plan,
)

NOW = 1_000_000.0
ME = "host:1"


def record(**changes: object) -> UpgradeRecord:
    base = UpgradeRecord(
        id="u1",
        target="b",
        old="a",
        offline_old=False,
        state="stopped",
        step="drain",
        started=NOW - 60,
        started_by="cli (op@host)",
        owner="host:99",
        beat=NOW - 30,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def observed(**changes: object) -> Observed:
    base = Observed(
        known=("a", "b"),
        active="a",
        offline=frozenset(),
        record=None,
        rollout=None,
        now=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def req(target: str = "b", offline_old: bool = False) -> Request:
    return Request(target, offline_old, ME)


def test_fresh_upgrade_runs_every_step() -> None:
    d = decide(observed(), req())
    assert isinstance(d, Run)
    assert (d.kind, d.old, d.record) == ("start", "a", None)
    assert d.steps == ("preflight", "smoke", "switch", "watch", "drain")
    d = decide(observed(), req(offline_old=True))
    assert isinstance(d, Run) and d.steps[-1] == "offline"


@pytest.mark.parametrize(
    ("obs", "target", "code", "words"),
    [
        (observed(), "c", EXIT_USAGE, "unknown system 'c'"),
        (observed(), "a", EXIT_USAGE, "already the active system"),
        (observed(offline=frozenset({"b"})), "b", EXIT_REFUSED, "gate: offline"),
        (
            observed(record=record(state="running", beat=NOW - 1)),
            "b",
            EXIT_REFUSED,
            "an upgrade to b is running",
        ),
        (
            observed(rollout=RolloutFacts("r1", "b", "a", "paused")),
            "b",
            EXIT_REFUSED,
            "a rollout to b is paused",
        ),
    ],
)
def test_bad_input_is_refused_with_its_code(
    obs: Observed, target: str, code: int, words: str
) -> None:
    d = decide(obs, req(target))
    assert isinstance(d, Refuse)
    assert d.code == code
    assert words in d.message


def test_a_running_upgrade_whose_owner_stopped_beating_is_resumed() -> None:
    stale = record(state="running", beat=NOW - LEASE - 1, step="switch")
    d = decide(observed(record=stale), req())
    assert isinstance(d, Run) and d.kind == "resume"
    assert d.steps[0] == "preflight"  # nothing switched yet: checks again
    # The same process (its own document) is never refused by itself.
    mine = record(state="running", beat=NOW, owner=ME)
    assert isinstance(decide(observed(record=mine), req()), Run)


def test_resume_drain_when_target_is_active() -> None:
    d = decide(observed(active="b", record=record()), req())
    assert isinstance(d, Run)
    assert (d.kind, d.old, d.steps) == ("resume", "a", ("watch", "drain"))
    assert "following its watch, then waiting for a to drain" in d.note
    # --offline-old given on the second run is kept.
    d = decide(observed(active="b", record=record()), req(offline_old=True))
    assert isinstance(d, Run) and d.steps == ("watch", "drain", "offline")
    assert d.record is not None and d.record.offline_old


def test_resume_watches_our_running_rollout() -> None:
    r = RolloutFacts("r1", "b", "a", "running")
    d = decide(observed(rollout=r, record=record(rollout_id="r1", step="switch")), req())
    assert isinstance(d, Run) and d.steps[0] == "switch"
    # Somebody else's rollout is a busy gate, ours is not.
    d = decide(observed(rollout=r, record=record(rollout_id="other")), req())
    assert isinstance(d, Refuse) and d.code == EXIT_REFUSED


def test_an_aborted_rollout_of_ours_reports_rolled_back() -> None:
    r = RolloutFacts("r1", "b", "a", "aborted", "b failed its health probe")
    d = decide(observed(rollout=r, record=record(rollout_id="r1", step="switch")), req())
    assert isinstance(d, Finished)
    assert d.code == EXIT_ROLLED_BACK and "health probe" in d.message


def test_finished_upgrades() -> None:
    done = record(state="done")
    d = decide(observed(active="b", record=done), req())
    assert isinstance(d, Finished) and d.code == EXIT_DONE
    # Resumed but the old system is already offline: done.
    d = decide(observed(active="b", offline=frozenset({"a"}), record=record()), req())
    assert isinstance(d, Finished) and d.code == EXIT_DONE


def test_an_unfinished_upgrade_elsewhere_is_superseded() -> None:
    d = decide(observed(active="b", record=record(state="stopped")), req("a"))
    assert isinstance(d, Run) and d.kind == "start" and "superseded" in d.note


def test_record_round_trip_and_garbage() -> None:
    r = record(rollout_id="r9", message="why")
    assert loads_record(r.dumps()) == r
    assert loads_record(None) is None
    assert loads_record("{not json") is None
    assert loads_record('{"id": 1}') is None


def test_steps_and_advice() -> None:
    assert steps_for(False, "drain") == ("drain",)
    assert steps_for(True, "switch") == ("switch", "watch", "drain", "offline")
    advice = stop_advice(record(), "smoke", rollouts=False)
    assert advice[0] == "resume: token-router upgrade b"
    assert "nothing was switched" in advice[1]
    assert "token-router switch a" in stop_advice(record(), "drain", rollouts=False)[1]
    assert "rollout abort" in stop_advice(record(), "switch", rollouts=True)[1]
    assert "at once" in switch_plan((100,), 60, rollouts=True)
    assert "5,25,100 %" in switch_plan((5, 25, 100), 60, rollouts=True)
    assert "no progressive rollout" in switch_plan((5, 100), 60, rollouts=False)
