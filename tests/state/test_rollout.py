"""Progressive rollouts: the pure model and share decision, then whole rollouts driven by the
routers themselves against real Redis and simulated systems (two instances), with short
intervals from the configuration and arguments, never sleeps."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import aiohttp
import orjson
import pytest

from router.config import build_config
from router.errors import BadRequest
from router.proxy.routing import Match, RequestFacts, Route, decide
from router.state import rollout as model
from router.state.rollout import Action, Share
from router.state.snapshot import Snapshot
from router.switching.gates import check_target
from router.systems.prober import Probe
from tests.admin.test_guarded_api import FAST, api, audit, instance_count
from tests.helpers import (
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
    router_data,
    wait_until,
)

KNOWN = frozenset({"a", "b"})

pytestmark = pytest.mark.timeout(180)


# --- pure parts --------------------------------------------------------------------------------


def rollout(**changes: Any) -> model.Rollout:
    base = model.new_rollout(
        target="b",
        source="a",
        steps=(5, 25, 50, 100),
        interval=10.0,
        max_error_rate=0.1,
        min_requests=20,
        now=1000.0,
        started_by="test",
    )
    return model.Rollout(**{**base.to_json(), "steps": base.steps, **changes})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5,25,25", "steps must increase: 25 follows 25"),
        ("50,25", "steps must increase"),
        ("0,50", "0 is outside 1..100"),
        ("5,101", "101 is outside 1..100"),
        ("5,x", "'x' is not a whole percentage"),
        ("5.5", "'5.5' is not a whole percentage"),
        ("", "at least one percentage"),
        ([5, True], "True is not a whole percentage"),
        (7, "give percentages"),
    ],
)
def test_bad_steps(value: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        model.parse_steps(value)


def test_good_steps_and_numbers() -> None:
    assert model.parse_steps("5, 25,50,100") == (5, 25, 50, 100)
    assert model.parse_steps([1, 100]) == (1, 100)
    assert model.parse_interval("1.5") == 1.5
    assert model.parse_interval(604_800) == 604_800
    for bad in ("0", "-1", "nan", "inf", True, 1e-9, "0.5", 604_801):
        with pytest.raises(BadRequest, match="interval"):
            model.parse_interval(bad)
    for bad in ("0", "1.5", "x"):
        with pytest.raises(BadRequest, match="max_error_rate"):
            model.parse_error_rate(bad)
    assert model.parse_min_requests("1000000") == model.parse_min_requests(1e6) == 1_000_000
    for bad in ("0", 2**63, 1e30, "1e30", 1_000_001, 2.5, "9" * 400):
        with pytest.raises(BadRequest, match="min_requests"):
            model.parse_min_requests(bad)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"interval": 1e-9}, "interval"),
        ({"min_requests": 2**63}, "min_requests"),
        ({"min_requests": 1e30}, "min_requests"),
        ({"step": 7}, "step: 7 is not an index"),
        ({"step": -1}, "step: -1 is not an index"),
        ({"step": 1.5}, "step"),
        ({"steps": [50, 5]}, "steps must increase"),
        ({"steps": "x"}, "steps"),
        ({"state": "exploded"}, "state"),
        ({"target": 5}, "target"),
        ({"max_error_rate": 0}, "max_error_rate"),
        ({"step_started": "soon"}, "step_started"),
        ({"paused_at": "later"}, "paused_at"),
    ],
)
def test_a_stored_document_with_wild_values_routes_nothing(
    changes: dict[str, Any], message: str
) -> None:
    """Issue 25: a rollout document written by redis-cli is held to the bounds of a started
    one; one it cannot use has no share (and no IndexError in the watcher: step 7 of 4)."""
    doc = {**rollout().to_json(), **changes}
    raw = orjson.dumps(doc).decode()
    with pytest.raises(BadRequest, match=message):
        model.parse(raw)
    assert model.loads(raw) is None
    assert model.share_of(model.loads(raw)) is None
    for garbage in ("", "[]", "5", '"running"', "{", '{"state": "running"}'):
        assert model.loads(garbage) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"interval": 0.5}, "interval: 0.5 s is outside"), ({"min_requests": 2**63}, "min_requests")],
)
def test_a_rollout_outside_the_bounds_is_never_started(
    changes: dict[str, Any], message: str
) -> None:
    """Every way of starting one (API, CLI, upgrade, drill) goes through new_rollout: what
    the stored document would be refused for is refused before it is written (an upgrade
    with --interval 0.5 wrote one, read it back as no rollout, and stopped with 'the rollout
    document disappeared')."""
    fields: dict[str, Any] = {
        "target": "b",
        "source": "a",
        "steps": (50, 100),
        "interval": 10.0,
        "max_error_rate": 0.1,
        "min_requests": 20,
        "now": 1000.0,
        "started_by": "test",
    }
    with pytest.raises(BadRequest, match=message):
        model.new_rollout(**{**fields, **changes})


def test_next_action_clock_and_abort_rules() -> None:
    r = rollout()
    assert model.next_action(r, 1005.0, {}, None) is None
    assert model.next_action(r, 1010.0, {}, None) == Action("advance", "5 % held for 10 s")
    last = rollout(step=3, step_started=1000.0)
    action = model.next_action(last, 1010.0, {}, None)
    assert action is not None and action.kind == "promote"
    # Abort wins over the clock: a failing probe, or the error share after min_requests.
    action = model.next_action(r, 1010.0, {}, "cannot connect")
    assert action is not None and action.kind == "abort" and "cannot connect" in action.reason
    assert model.next_action(r, 1001.0, {"b": (19, 19)}, None) is None  # under min_requests
    action = model.next_action(r, 1001.0, {"b": (20, 2)}, None)
    assert action is not None and action.kind == "abort"
    assert action.reason == "2 of 20 token requests to b failed in step 1 (10.0% >= 10.0%)"
    assert model.next_action(r, 1001.0, {"b": (20, 1), "a": (100, 100)}, None) is None
    # Paused: the clock stops, the safety net does not.
    p = model.paused(r, 1004.0)
    assert model.next_action(p, 1100.0, {}, None) is None
    assert model.next_action(p, 1100.0, {}, "down") == Action(
        "abort", "b's gateway failed its health probe: down"
    )
    resumed = model.resumed(p, 1050.0)
    assert resumed.held(1050.0) == pytest.approx(4.0)
    assert resumed.next_in(1050.0) == pytest.approx(6.0)
    # Terminal states do nothing, and share nothing.
    done = model.ended(r, "aborted", 1001.0, "x")
    assert model.next_action(done, 2000.0, {}, "down") is None
    assert model.share_of(done) is None
    assert model.share_of(p) == Share("b", 0.05, r.id, 0)
    assert model.loads(r.dumps()) == r
    assert model.loads("{not json") is None


def test_share_decides_new_sessions_only_after_affinity_preview_and_prefer() -> None:
    snapshot = Snapshot(active="a", rollout=Share("b", 0.25, "r1", 1))
    token = RequestFacts(Match(Route.TOKEN_CREATE))
    assert decide(token, snapshot, KNOWN, draw=lambda: 0.2499).system == "b"
    assert decide(token, snapshot, KNOWN, draw=lambda: 0.2499).reason == "rollout"
    assert decide(token, snapshot, KNOWN, draw=lambda: 0.25).system == "a"
    code = RequestFacts(Match(Route.CODE_CREATE))
    assert decide(code, snapshot, KNOWN, draw=lambda: 0.0).system == "b"
    # What belongs to a system keeps reaching it; prefer and preview decide first.
    delete = RequestFacts(Match(Route.TOKEN_DELETE, ident="x"), owner="a")
    assert decide(delete, snapshot, KNOWN, draw=lambda: 0.0).system == "a"
    prefer = RequestFacts(Match(Route.TOKEN_CREATE), prefer="a")
    assert decide(prefer, snapshot, KNOWN, draw=lambda: 0.0).system == "a"
    preview = RequestFacts(Match(Route.TOKEN_CREATE), preview="a")
    assert decide(preview, snapshot, KNOWN, draw=lambda: 0.0).system == "a"
    # Other routes are not new sessions.
    library = RequestFacts(Match(Route.LIBRARY))
    assert decide(library, snapshot, KNOWN, draw=lambda: 0.0).system == "a"
    # An offline target gets nothing; no rollout, no draw at all.
    offline = Snapshot(active="a", offline=frozenset({"b"}), rollout=snapshot.rollout)
    assert decide(token, offline, KNOWN, draw=lambda: 0.0).system == "a"

    def no_draw() -> float:
        raise AssertionError("drew without a rollout")

    assert decide(token, Snapshot(active="a"), KNOWN, draw=no_draw).system == "a"


def test_gate_decision() -> None:
    now = 100.0
    assert check_target("b", frozenset(), Probe(True, 99.0), now, 5.0) == []
    [stale] = check_target("b", frozenset(), Probe(True, 90.0), now, 5.0)
    assert stale.gate == "health"
    gates = check_target("b", frozenset({"b"}), Probe(False, 99.0, "down"), now, 5.0)
    assert [g.gate for g in gates] == ["offline", "health"]
    assert "down" in gates[1].message


# --- whole rollouts ---------------------------------------------------------------------------


async def two_routers(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    *,
    stats_b: bool = False,
) -> list[RunningRouter]:
    data = router_data(redis_server.url, gateways, **FAST)
    if stats_b:
        # Probed on the simulator's fault-exempt state route: b stays "healthy" while its
        # token requests fail, so only the error share can abort.
        data["systems"]["b"]["stats_url"] = gateways["b"].url + "/_sim/state"
    config = build_config(data, {})
    instances = [await routers(config) for _ in range(2)]
    await wait_until(lambda: instance_count(redis_server) == 2, timeout=10)
    return instances


async def token_systems(
    http: aiohttp.ClientSession, instances: list[RunningRouter], n: int
) -> list[str]:
    """`n` token requests spread over the instances, 8 at a time; the system of each."""
    out: list[str] = []
    body = orjson.dumps(SESSION_BODY)

    async def worker(i: int) -> None:
        for k in range(i, n, 8):
            router = instances[k % len(instances)]
            async with http.post(router.proxy_url + SESSION_PATH, data=body) as resp:
                await resp.read()
                out.append(resp.headers.get("X-Token-Router-System", f"status {resp.status}"))

    await asyncio.gather(*(worker(i) for i in range(8)))
    return out


def rollout_doc(router: RunningRouter) -> Share | None:
    return router.server.runtime.holder.current.rollout


async def test_rollout_of_four_steps_share_measured_and_promoted(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    instances = await two_routers(redis_server, gateways, routers)
    first = instances[0]
    status, doc = await api(
        http,
        first,
        "/api/rollout",
        {"system": "b", "steps": "5,25,50,100", "interval": 1.5, "min_requests": 50},
    )
    assert status == 201, doc
    assert doc["rollout"]["state"] == "running" and doc["rollout"]["percent"] == 5
    assert doc["confirmation"]["applied"] == 2
    measured: dict[int, float] = {}
    n = 400
    for step, percent in enumerate((5, 25, 50, 100)):
        await wait_until(
            lambda s=step: all(  # type: ignore[misc]
                (r := rollout_doc(x)) is not None and r.step == s for x in instances
            ),
            timeout=20,
        )
        # Hold the step while measuring: pause (confirmed by both instances), then resume.
        status, doc = await api(http, first, "/api/rollout/pause", {})
        assert status == 200, doc
        assert doc["rollout"]["step"] == step and doc["rollout"]["state"] == "paused"
        async with http.get(instances[1].admin_url + "/metrics") as resp:
            assert f'tokenrouter_rollout_percent{{system="b"}} {percent}.0' in await resp.text()
        systems = await token_systems(http, instances, n)
        assert set(systems) <= {"a", "b"}
        measured[percent] = systems.count("b") / n
        p = percent / 100
        bound = 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma of a binomial share: never flaky
        assert abs(measured[percent] - p) <= bound, (percent, measured)
        status, doc = await api(http, first, "/api/rollout", method="GET")
        counts = doc["rollout"]["counts"]
        assert status == 200 and doc["rollout"]["step_number"] == step + 1
        assert set(counts) <= {"a", "b"}
        status, doc = await api(http, instances[1], "/api/rollout/resume", {})
        assert status == 200, doc
    # The last step held for its interval: b becomes active everywhere; the rollout ends.
    await wait_until(lambda: all(r.active == "b" for r in instances), timeout=20)
    status, doc = await api(http, first, "/api/rollout", method="GET")
    assert doc["rollout"]["state"] == "promoted" and doc["rollout"]["percent"] == 0
    assert all(rollout_doc(r) is None for r in instances)
    print("measured share per step:", measured)
    entries = list(reversed(await audit(http, first)))
    actions = [e["action"] for e in entries if e["action"] != "switch" or e["from"]]
    # Every transition recorded exactly once, in order.
    assert actions == [
        "rollout-start",
        "rollout-pause",
        "rollout-resume",
        "rollout-step",
        "rollout-pause",
        "rollout-resume",
        "rollout-step",
        "rollout-pause",
        "rollout-resume",
        "rollout-step",
        "rollout-pause",
        "rollout-resume",
        "promote",
    ]
    promote = entries[-1]
    assert (promote["from"], promote["to"]) == ("a", "b")
    assert promote["source"].startswith("rollout controller (")


async def test_automatic_abort_on_error_share_counted_across_instances(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    gw = gateways["b"]
    instances = await two_routers(redis_server, gateways, routers, stats_b=True)
    status, doc = await api(
        http,
        instances[0],
        "/api/rollout",
        {
            "system": "b",
            "steps": [1, 100],
            "interval": 3600,
            "max_error_rate": 0.5,
            "min_requests": 10,
        },
    )
    assert status == 201, doc
    async with http.post(gw.url + "/_sim/fail", json={"status": 500, "count": None}) as resp:
        assert resp.status == 200
    # Exactly 6 failing token requests to b on each instance (pinned with Prefer, so no
    # chance is involved): neither instance alone reaches min_requests, together they do.
    body = orjson.dumps(SESSION_BODY)
    for router in instances:
        for _ in range(6):
            async with http.post(
                router.proxy_url + SESSION_PATH, data=body, headers={"X-Token-Router-Prefer": "b"}
            ) as resp:
                assert resp.status == 500
    await wait_until(lambda: all(rollout_doc(r) is None for r in instances), timeout=20)
    status, doc = await api(http, instances[0], "/api/rollout", method="GET")
    r = doc["rollout"]
    assert r["state"] == "aborted" and r["percent"] == 0
    assert r["end_reason"] == "12 of 12 token requests to b failed in step 1 (100.0% >= 50.0%)"
    assert r["counts"]["b"] == {"requests": 12, "failures": 12}
    assert all(x.active == "a" for x in instances)
    # After the abort every new session goes to a.
    assert set(await token_systems(http, instances, 40)) == {"a"}
    entry = next(e for e in await audit(http, instances[0]) if e["action"] == "rollout-abort")
    assert entry["source"].startswith("rollout controller (")


async def test_automatic_abort_when_target_stops_answering(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    instances = await two_routers(redis_server, gateways, routers)
    status, doc = await api(
        http, instances[1], "/api/rollout", {"system": "b", "steps": "10,100", "interval": 3600}
    )
    assert status == 201, doc
    await gateways["b"].stop()
    await wait_until(lambda: all(rollout_doc(r) is None for r in instances), timeout=20)
    status, doc = await api(http, instances[0], "/api/rollout", method="GET")
    assert doc["rollout"]["state"] == "aborted"
    assert "b's gateway failed its health probe" in doc["rollout"]["end_reason"]
    assert all(x.active == "a" for x in instances)


async def test_rollout_bad_input_and_states_change_nothing(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    [router, _] = await two_routers(redis_server, gateways, routers)
    before = redis_server.command("XLEN", "tokenrouter:audit")
    for body, message in (
        ({"system": "zz", "steps": "5,100", "interval": 1}, "unknown system 'zz'"),
        ({"system": "b", "steps": "50,5", "interval": 1}, "steps must increase"),
        ({"system": "b", "steps": "5,150", "interval": 1}, "outside 1..100"),
        ({"system": "b", "steps": "5,100", "interval": 0}, "interval"),
        ({"system": "b", "steps": "5,100", "interval": -3}, "interval"),
        ({"system": "b", "steps": "5,100"}, "interval"),
        # Issue 25: an unguarded switch through every step, an abort that never fires, a 500.
        ({"system": "b", "steps": "5,100", "interval": 1e-9}, "interval"),
        ({"system": "b", "steps": "5,100", "interval": 1, "min_requests": 2**63}, "min_requests"),
        ({"system": "b", "steps": "5,100", "interval": 1, "min_requests": 1e30}, "min_requests"),
    ):
        status, doc = await api(http, router, "/api/rollout", body)
        assert (status, doc["error"]) == (400, "bad_request"), body
        assert message in doc["message"]
    body = {"system": "a", "steps": "5,100", "interval": 1}
    status, doc = await api(http, router, "/api/rollout", body)
    assert (status, doc["error"]) == (409, "conflict")
    assert "already the active system" in doc["message"]
    for action in ("pause", "resume", "promote", "abort"):
        status, doc = await api(http, router, f"/api/rollout/{action}", {})
        assert status == 409 and "no rollout is running" in doc["message"], action
    assert redis_server.command("EXISTS", "tokenrouter:rollout") == ":0"
    assert redis_server.command("XLEN", "tokenrouter:audit") == before

    body = {"system": "b", "steps": "5,100", "interval": 3600}
    assert (await api(http, router, "/api/rollout", body))[0] == 201
    stored = redis_server.command("GET", "tokenrouter:rollout")
    status, doc = await api(http, router, "/api/rollout", body)
    assert status == 409 and "already running" in doc["message"]
    status, doc = await api(http, router, "/api/rollout/resume", {})
    assert status == 409 and "not paused" in doc["message"]
    assert redis_server.command("GET", "tokenrouter:rollout") == stored


async def test_bare_set_or_switch_during_a_rollout_ends_it(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    instances = await two_routers(redis_server, gateways, routers)
    body = {"system": "b", "steps": "20,100", "interval": 3600}
    assert (await api(http, instances[0], "/api/rollout", body))[0] == 201
    await wait_until(lambda: all(rollout_doc(r) is not None for r in instances))
    redis_server.command("SET", "tokenrouter:active", "b")
    await wait_until(lambda: all(rollout_doc(r) is None and r.active == "b" for r in instances))
    status, doc = await api(http, instances[1], "/api/rollout", method="GET")
    assert doc["rollout"]["state"] == "ended"
    assert "bare SET" in doc["rollout"]["end_reason"]
    ends = [e for e in await audit(http, instances[0]) if e["action"] == "rollout-end"]
    assert len(ends) == 1  # seen by both instances, recorded once

    # A switch through token-router ends a rollout too (recorded), and so does an abort...
    body = {"system": "a", "steps": "20,100", "interval": 3600}
    assert (await api(http, instances[0], "/api/rollout", body))[0] == 201
    status, doc = await api(http, instances[1], "/api/switch", {"system": "a"})
    assert status == 200
    status, doc = await api(http, instances[1], "/api/rollout", method="GET")
    assert doc["rollout"]["state"] == "ended"
    ends = [e for e in await audit(http, instances[0]) if e["action"] == "rollout-end"]
    assert len(ends) == 2 and "ended by a switch to a" in ends[0]["reason"]


async def test_operator_promote_and_abort(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    instances = await two_routers(redis_server, gateways, routers)
    body = {"system": "b", "steps": "20,100", "interval": 3600}
    assert (await api(http, instances[0], "/api/rollout", body))[0] == 201
    status, doc = await api(http, instances[1], "/api/rollout/abort", {"reason": "not today"})
    assert status == 200 and doc["rollout"]["state"] == "aborted"
    assert doc["rollout"]["end_reason"] == "not today"
    assert all(rollout_doc(r) is None for r in instances)  # confirmed: applied everywhere
    assert (await api(http, instances[0], "/api/rollout", body))[0] == 201
    status, doc = await api(http, instances[1], "/api/rollout/promote", {})
    assert status == 200, doc
    assert doc["rollout"]["state"] == "promoted"
    assert all(r.active == "b" for r in instances)
    assert doc["confirmation"]["applied"] == 2


async def test_guarded_switching_and_rollout_on_the_memory_store(
    gateways: dict[str, Gateway], routers: RouterFactory, http: aiohttp.ClientSession
) -> None:
    """The demo without Redis: one process, the same API (confirmed by 1/1)."""
    router = await routers(make_config("memory://", gateways, **FAST))
    await wait_until(lambda: router.server.runtime.holder.synced)
    status, doc = await api(http, router, "/api/switch", {"system": "b", "expect": "a"})
    assert status == 200 and doc["message"].startswith("switched a -> b; applied by 1/1")
    status, doc = await api(http, router, "/api/undo", {})
    assert status == 200 and router.active == "a"
    body = {"system": "b", "steps": "50,100", "interval": 1}
    status, doc = await api(http, router, "/api/rollout", body)
    assert status == 201, doc
    await wait_until(lambda: router.active == "b", timeout=20)
    status, doc = await api(http, router, "/api/rollout", method="GET")
    assert doc["rollout"]["state"] == "promoted"
    status, doc = await api(http, router, "/api/instances", method="GET")
    assert [i["id"] for i in doc["instances"]] == [router.server.runtime.instance]
