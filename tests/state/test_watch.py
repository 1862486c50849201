"""The post-switch watch's pure model: figures, quantiles, breaches, verdicts, when a change
gets a watch. Plain data, no sockets (the flows are in tests/switching/test_watch_flow.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from router.state import watch as model
from router.state.watch import Change, Thresholds, Traffic
from router.switching.ledger import BOUNDS, fields, parse, totals

LIMITS = Thresholds(
    max_error_rate=0.05, min_requests=20, max_latency=2.0, latency_factor=3.0, latency_floor=0.1
)


def answered(seconds: float, n: int) -> tuple[int, ...]:
    """`n` answers in the bucket of `seconds`."""
    buckets = [0] * (len(BOUNDS) + 1)
    buckets[next((i for i, b in enumerate(BOUNDS) if seconds <= b), len(BOUNDS))] = n
    return tuple(buckets)


def fast(requests: int, failures: int = 0) -> Traffic:
    return Traffic(requests, failures, answered(0.004, requests - failures))


def test_quantile_like_histogram_quantile() -> None:
    assert model.quantile((), BOUNDS, 0.99) is None
    assert model.quantile((0,) * 15, BOUNDS, 0.99) is None
    # 100 answers in (2.5 ms, 5 ms]: linear within the bucket.
    p99 = model.quantile(answered(0.004, 100), BOUNDS, 0.99)
    assert p99 == pytest.approx(0.0025 + 0.0025 * 0.99)
    # The +Inf bucket reads as the highest finite bound.
    assert model.quantile(answered(60.0, 10), BOUNDS, 0.99) == BOUNDS[-1]
    # 98 fast, 2 slow: the p99 falls among the slow ones.
    mixed = fast(98) + Traffic(2, 0, answered(3.0, 2))
    p99 = mixed.p99(BOUNDS)
    assert p99 is not None and 2.5 < p99 <= 5.0


def test_traffic_adds_and_round_trips() -> None:
    total = fast(10, 2) + Traffic(5, 5, ())
    assert (total.requests, total.failures, total.answered) == (15, 7, 8)
    assert total.share == pytest.approx(7 / 15)
    assert model.traffic_from(total.to_json()) == total
    assert Traffic().share == 0.0


def test_error_breach_needs_min_requests_and_a_worse_share_than_before() -> None:
    assert model.error_breach(fast(19, 19), None, LIMITS) is None  # too few to judge
    assert model.error_breach(fast(20, 1), None, LIMITS) == "failed share 5.0% >= 5.0%"
    assert model.error_breach(fast(100, 4), None, LIMITS) is None
    # The old system failed as often before the switch: not the new system's fault.
    assert model.error_breach(fast(100, 10), fast(400, 40), LIMITS) is None
    assert model.error_breach(fast(100, 10), fast(400, 4), LIMITS) is not None
    # A baseline under min_requests says nothing.
    assert model.error_breach(fast(100, 10), fast(10, 5), LIMITS) is not None


def test_latency_breach_absolute_and_relative_with_floor() -> None:
    slow = Traffic(40, 0, answered(3.0, 40))
    assert model.latency_breach(slow, None, LIMITS, BOUNDS) == "p99 4975 ms > 2000 ms"
    # Under min_requests answers: nothing judged.
    assert model.latency_breach(Traffic(19, 0, answered(3.0, 19)), None, LIMITS, BOUNDS) is None
    # The old system was as slow: the absolute bound alone does not blame the new one.
    assert model.latency_breach(slow, Traffic(40, 0, answered(4.0, 40)), LIMITS, BOUNDS) is None
    # Relative: 3 x a 4 ms baseline would be 12 ms, but the floor (100 ms) decides: 300 ms.
    base = fast(100)
    assert model.latency_breach(Traffic(40, 0, answered(0.04, 40)), base, LIMITS, BOUNDS) is None
    why = model.latency_breach(Traffic(40, 0, answered(0.4, 40)), base, LIMITS, BOUNDS)
    assert why is not None and "3 x the baseline's 5 ms (floor 100 ms)" in why
    off = Thresholds(0.05, 20, 0.0, 0.0, 0.1)
    assert model.latency_breach(slow, base, off, BOUNDS) is None


def change(**kw: object) -> Change:
    base: dict[str, object] = {
        "id": "1-0",
        "action": "switch",
        "source": "cli",
        "from_": "a",
        "to": "b",
        "time": 1000.0,
    }
    return Change(**{**base, **kw})  # type: ignore[arg-type]


def watch(**kw: object) -> model.Watch:
    w = model.new_watch(
        change(),
        window=600.0,
        span=60.0,
        thresholds=LIMITS,
        previous_offline=False,
        baseline=fast(1200),
        baseline_from=400.0,
    )
    return replace(w, **kw)  # type: ignore[arg-type]


def test_which_change_gets_a_watch() -> None:
    known = ("a", "b")
    args = {"active": "b", "known": known, "window": 600.0, "now": 1100.0}
    assert model.should_watch(change(), None, **args)  # type: ignore[arg-type]
    assert not model.should_watch(None, None, **args)  # type: ignore[arg-type]
    assert not model.should_watch(change(), None, **{**args, "window": 0.0})  # type: ignore[arg-type]
    assert not model.should_watch(change(), None, **{**args, "now": 1600.0})  # type: ignore[arg-type]
    assert not model.should_watch(change(), None, **{**args, "active": "a"})  # type: ignore[arg-type]
    # Watched already; the watch's own undo (no flapping); a seed from nothing; unknown.
    assert not model.should_watch(change(), watch(), **args)  # type: ignore[arg-type]
    assert not model.should_watch(change(action=model.AUTO_UNDO), None, **args)  # type: ignore[arg-type]
    assert not model.should_watch(change(from_=""), None, **args)  # type: ignore[arg-type]
    assert not model.should_watch(change(from_="zz"), None, **args)  # type: ignore[arg-type]
    # A bare SET the routers recorded, a promotion, an operator's undo: all watched.
    for action in ("switch", "promote", "undo"):
        assert model.should_watch(change(id="2-0", action=action), watch(), **args)  # type: ignore[arg-type]
    entries = [change(id="3-0", action="rollout-step"), change(id="2-0"), change(id="1-0")]
    assert model.last_change(entries) == change(id="2-0")


def test_verdicts() -> None:
    w = watch()
    assert model.verdict(w, 1010.0, fast(10), 1000.0, BOUNDS) == model.Verdict("measure", "")
    v = model.verdict(w, 1010.0, fast(100, 40), 1000.0, BOUNDS)
    assert v is not None and v.kind == "undo"
    assert v.evidence.startswith("failed share 40.0% >= 5.0%: b: 40 of 100 token requests failed")
    assert "a: 0 of 1200 token requests failed (0.0%)" in v.evidence
    assert "in the 600 s before the switch" in v.evidence
    assert "watch window 600 s from switch a -> b" in v.evidence
    # Alarm only when the old system was offline at the switch.
    v = model.verdict(watch(can_undo=False), 1010.0, fast(100, 40), 1000.0, BOUNDS)
    assert v is not None and v.kind == "alarm"
    v = model.verdict(w, 1600.0, fast(100), 1540.0, BOUNDS)
    assert v is not None and v.kind == "pass" and v.evidence.startswith("no threshold breached")
    assert (
        model.verdict(model.ended(w, model.UNDONE, 1010.0, "x"), 1020.0, fast(1), 0, BOUNDS) is None
    )
    # A breach at the very end still undoes: the window is judged to its last second.
    v = model.verdict(w, 1600.0, fast(100, 50), 1540.0, BOUNDS)
    assert v is not None and v.kind == "undo"


def test_document_round_trip_and_time_left() -> None:
    w = model.measured(watch(), fast(50, 1), 1001.0, 1060.0)
    assert model.loads(w.dumps(), LIMITS) == w
    assert model.loads("{", LIMITS) is None and model.loads(None, LIMITS) is None
    assert w.left(1100.0) == 500.0
    assert model.ended(w, model.PASSED, 1600.0, "").left(1100.0) == 0.0


def test_recent_reaches_back_until_min_requests() -> None:
    slots = {100 + i: {"b": fast(5)} for i in range(10)}  # 5 a second, 100..109
    figures, first = model.recent(slots, "b", start=100, now=109, span=2, min_requests=20)
    assert (figures.requests, first) == (20, 106)
    figures, first = model.recent(slots, "b", start=105, now=109, span=60, min_requests=20)
    assert (figures.requests, first) == (25, 105)
    figures, first = model.recent(slots, "b", start=108, now=109, span=1, min_requests=100)
    assert (figures.requests, first) == (10, 108)  # never before the switch


def test_ledger_fields_and_parse() -> None:
    local = {
        ("token_create", "a", 200): 8,
        ("token_create", "a", 503): 1,
        ("token_create", "a", 0): 1,
        ("library", "a", 200): 50,
    }
    latency = {("a", "token_create"): [0, 0, 0, 9] + [0] * 11, ("a", "library"): [50] + [0] * 14}
    now = totals(local, latency)
    assert now["a"].requests == 10 and now["a"].failures == 2 and now["a"].answered == 9
    changed = fields(now, {})
    assert changed == {"a:r": 10, "a:f": 2, "a:b3": 9}
    assert parse(changed) == {"a": now["a"]}
    later = totals({**local, ("token_create", "a", 200): 9}, latency)
    assert fields(later, now) == {"a:r": 1}
    assert parse({"b:r": 3, "junk": 1, "b:b99": 4}) == {"b": Traffic(3, 0, ())}


async def test_the_memory_store_keeps_the_ledger_and_the_watch_like_redis() -> None:
    from router.errors import Conflict
    from router.state.memory_store import MemoryStore
    from router.state.store import AuditFields

    store = MemoryStore()
    await store.add_traffic(100, {"a:r": 3, "a:b2": 3}, 60)
    await store.add_traffic(100, {"a:r": 1, "a:f": 1}, 60)
    assert await store.read_traffic([99, 100]) == [{}, {"a:r": 4, "a:b2": 3, "a:f": 1}]
    assert parse((await store.read_traffic([100]))[0])["a"] == Traffic(4, 1, answered(0.002, 3))
    await store.write_watch(None, "one")
    with pytest.raises(Conflict):
        await store.write_watch(None, "two")
    await store.write_watch("one", "two", AuditFields(model.ALARM_ACTION, "me", "a", "b", "why"))
    assert await store.read_watch() == "two"
    [entry] = await store.audit(1)
    assert (entry.action, entry.from_, entry.to, entry.reason) == ("watch-alarm", "a", "b", "why")
