"""Malformed values in the router's Redis namespace (issue 25): no value or type written with
redis-cli into any key the router uses stops a router from following `active`, wedges it,
splits the fleet or crashes a command. Real redis-server, real routers, real CLI processes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from router.cli.common import Context, audit_line
from router.cli.status import status_document
from router.config import Config
from router.errors import RouterError
from router.state.keys import Keys
from router.state.redis_store import RedisStore
from router.state.snapshot import Refusal
from router.switching import operations
from router.switching.gates import Gates
from router.systems.prober import GatewayProber
from tests.cli.test_cli import run
from tests.helpers import (
    ADMIN_AUTH,
    REDIS_TIMEOUT,
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
    new_token,
    router_data,
    wait_until,
    write_toml,
)

pytestmark = pytest.mark.timeout(180)

PREFIX = "tokenrouter"
# Beats every 0.5 s (stale after 1.5 s): a router starved for a moment on a busy machine is
# not pruned from the fleet, which would make "applied by 2/2" read "1/1".
FAST = {"heartbeat_interval": 0.5, "rollout_tick": 0.05, "leader_ttl": 0.5, "gate_probe_age": 0.001}


async def readyz(http: aiohttp.ClientSession, router: RunningRouter) -> tuple[int, dict[str, Any]]:
    async with http.get(router.admin_url + "/readyz") as resp:
        return resp.status, await resp.json()


async def cli(*args: str) -> Any:
    return await asyncio.to_thread(run, *args)


def one_line(result: Any, codes: tuple[int, ...]) -> str:
    """A command's answer: a documented exit code, never a traceback; an error is one line."""
    assert "Traceback" not in result.stderr + result.stdout, result
    assert result.returncode in codes, result
    if result.returncode in (2, 3):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return str(result.stderr)


async def test_garbage_generation_never_freezes_the_fleet(
    tmp_path: Path,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    """`SET <prefix>:generation notanumber` froze every router for good (issue 25 item 1)."""
    config = make_config(redis_server.url, gateways, **FAST)
    fleet = [await routers(config), await routers(config)]
    await wait_until(lambda: all(r.server.runtime.holder.synced for r in fleet))
    redis_server.command("SET", f"{PREFIX}:generation", "notanumber")
    # A bare SET still moves every router, and /readyz names the key meanwhile.
    redis_server.command("SET", f"{PREFIX}:active", "b")
    await wait_until(lambda: all(r.active == "b" for r in fleet))
    for router in fleet:
        status, body = await readyz(http, router)
        assert status == 200 and body["status"] == "degraded", body
        assert f"{PREFIX}:generation" in body["error"], body

    # The CLI and the API answer (one line, documented exit codes; JSON, never a 500) and a
    # switch through them repairs the counter: confirmation by every router again.
    path = write_toml(tmp_path / "r.toml", router_data(redis_server.url, gateways, **FAST))
    one_line(await cli("status", "--config", str(path)), (0, 4))
    result = await cli("switch", "a", "--config", str(path))
    one_line(result, (0,))
    assert "applied by 2/2" in result.stdout, result.stdout
    assert all(r.active == "a" for r in fleet)
    async with http.post(
        fleet[0].admin_url + "/api/switch", json={"system": "b"}, headers=ADMIN_AUTH
    ) as resp:
        assert resp.status == 200, await resp.text()
    await wait_until(lambda: all(r.active == "b" for r in fleet))

    # Garbage again, then fixed by hand: every router recovers with no restart.
    redis_server.command("SET", f"{PREFIX}:generation", "12x")
    redis_server.command("SET", f"{PREFIX}:active", "a")
    await wait_until(lambda: all(r.active == "a" for r in fleet))
    redis_server.command("SET", f"{PREFIX}:generation", "41")
    redis_server.command("SET", f"{PREFIX}:active", "b")
    await wait_until(lambda: all(r.active == "b" for r in fleet))
    for router in fleet:

        async def ready(router: RunningRouter = router) -> bool:
            return bool((await readyz(http, router))[1]["status"] == "ready")

        await wait_until(ready)
        assert router.server.runtime.holder.current.generation == 41
    # One leader at most, whatever happened.
    async with http.get(fleet[0].admin_url + "/api/instances", headers=ADMIN_AUTH) as resp:
        doc = await resp.json()
    assert sum(1 for i in doc["instances"] if i["leader"]) <= 1, doc


async def test_bare_sadd_of_the_active_system_is_refused_and_audited(
    tmp_path: Path,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    """Issue 25 item 6: `SADD <prefix>:offline <active>` made every new token 503 with
    /readyz still ready, past the gate a bare SET of an offline system meets."""
    config = make_config(redis_server.url, gateways, **FAST)
    fleet = [await routers(config), await routers(config)]
    await wait_until(lambda: all(r.server.runtime.holder.synced for r in fleet))
    redis_server.command("SADD", f"{PREFIX}:offline", "a")
    await wait_until(
        lambda: all(
            (r.server.runtime.holder.current.refused or Refusal("", 0)).reason == "offline-mark"
            for r in fleet
        )
    )
    for router in fleet:
        assert router.active == "a" and not router.server.runtime.holder.current.is_offline("a")
        assert (await new_token(http, router))[1] == "a"  # not a 503
        status, body = await readyz(http, router)
        assert (body["status"], body["refused"], body["refused_reason"]) == (
            "ready",
            "a",
            "offline-mark",
        ), body
    path = write_toml(tmp_path / "r.toml", router_data(redis_server.url, gateways, **FAST))
    result = await cli("status", "--config", str(path))
    one_line(result, (4,))
    assert "REFUSED  'a' in the offline set" in result.stdout, result.stdout
    async with http.get(fleet[0].admin_url + "/api/audit", headers=ADMIN_AUTH) as resp:
        entries = (await resp.json())["entries"]
    refusals = [e for e in entries if e["action"] == "offline-refused"]
    assert len(refusals) == 1 and refusals[0]["to"] == "a", entries  # once, not per router

    # Removed again: nothing is refused any more. Forced through token-router, the active
    # system goes offline as the operator asked (503), as before.
    redis_server.command("SREM", f"{PREFIX}:offline", "a")
    await wait_until(lambda: all(r.server.runtime.holder.current.refused is None for r in fleet))
    result = await cli("offline", "a", "--force", "--config", str(path))
    one_line(result, (0,))
    await wait_until(lambda: all(r.server.runtime.holder.current.is_offline("a") for r in fleet))
    assert all(r.server.runtime.holder.current.refused is None for r in fleet)
    async with http.post(fleet[0].proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
        assert resp.status == 503
    one_line(await cli("online", "a", "--config", str(path)), (0,))
    await wait_until(lambda: not any(r.server.runtime.holder.current.offline for r in fleet))
    assert redis_server.command("EXISTS", f"{PREFIX}:offline:forced") == ":0"


# --- the property: every key of the namespace, wrong kinds and garbage, real routers --------

# Values nobody but redis-cli writes: not numbers, numbers INCR refuses, JSON of the wrong
# shape, a rollout document with wild fields, control bytes, a system id where a counter
# belongs and the other way round.
NASTY = [
    "",
    "notanumber",
    "12x",
    "-0",
    "007",
    "9" * 30,
    "1e30",
    "nan",
    "inf",
    "-1",
    "[]",
    "{}",
    "5",
    "null",
    '{"state": "running"}',
    '{"id": "r", "target": "b", "source": "a", "steps": [50, 100], "interval": 1e-9,'
    ' "max_error_rate": 0.05, "min_requests": 9223372036854775808, "step": 9,'
    ' "step_started": 0, "state": "running", "started": 0}',
    '{"id": "x", "seen": 1e300, "applied": "no"}',
    "\x1b[2J\r\nfake line",
    "zz",
    "b",
]


def namespace_keys(keys: Keys, holes: dict[str, str]) -> list[str]:
    """Every key keys.py names, its parameters filled from `holes` (by parameter name)."""
    found = []
    for name in sorted(dir(Keys)):
        if name.startswith("_") or name in ("prefix", "keyspace_channels"):
            continue
        member = getattr(Keys, name)
        if isinstance(member, property):
            found.append(getattr(keys, name))
        else:
            params = member.__code__.co_varnames[1 : member.__code__.co_argcount]
            found.append(getattr(keys, name)(*[holes[p] for p in params]))
    return found


SLOT = "<slot>"  # a per-second key's hole: filled with the second the round writes in


@dataclass(frozen=True)
class Corruption:
    key: str
    kind: str  # string, list, set, hash, zset, stream
    value: str

    @property
    def now_key(self) -> str:
        """The key, a per-second one (traffic) being this second's."""
        return self.key.replace(SLOT, str(int(time.time())))

    def commands(self) -> list[tuple[str, ...]]:
        key = self.now_key
        write = {
            "string": ("SET", key, self.value),
            "list": ("RPUSH", key, self.value),
            "set": ("SADD", key, self.value),
            "hash": ("HSET", key, self.value or "f", self.value),
            "zset": ("ZADD", key, "1", self.value),
            "stream": ("XADD", key, "*", "time", self.value, "action", self.value),
        }[self.kind]
        return [("DEL", key), write]


def plans(names: list[str]) -> st.SearchStrategy[list[Corruption]]:
    value = st.one_of(
        st.sampled_from(NASTY),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=24),
    )
    kinds = st.sampled_from(["string", "list", "set", "hash", "zset", "stream"])
    one = st.builds(Corruption, st.sampled_from(names), kinds, value)
    return st.lists(one, min_size=1, max_size=3, unique_by=lambda c: c.key)


def draw(strategy: st.SearchStrategy[list[Corruption]], count: int) -> list[list[Corruption]]:
    """`count` plans from hypothesis (derandomized: the same plans on every run; no
    shrinking, since the rounds run against live routers, not inside `given`)."""
    drawn: list[list[Corruption]] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(plan: list[Corruption]) -> None:
        drawn.append(plan)

    collect()
    return drawn[:count]


ROUNDS = 60  # bounded in count; each round waits on conditions (10 s at most each)


async def api_answers(http: aiohttp.ClientSession, router: RunningRouter) -> None:
    """Every read of the admin API answers JSON, never a 500, whatever Redis holds."""
    for path in ("/api/status", "/api/rollout", "/api/audit", "/api/instances", "/readyz"):
        async with http.get(router.admin_url + path, headers=ADMIN_AUTH) as resp:
            assert resp.status in (200, 503), (path, resp.status, await resp.text())
            assert resp.content_type == "application/json", path
            await resp.json()


async def cli_paths(store: RedisStore, config: Config) -> str:
    """What `status`, `history`, `rollout status` and `switch` run, in process: only the
    errors the command line turns into one line (RouterError) may come out."""
    ctx = Context(config, store)
    try:
        with contextlib.suppress(RouterError):
            await status_document(ctx)
        with contextlib.suppress(RouterError):
            [audit_line(e) for e in await store.audit(50)]
        with contextlib.suppress(RouterError):
            await operations.rollout_view(store, time.time())
        return ""
    finally:
        await ctx.prober.close()


def follows_or_says_so(
    router: RunningRouter, target: str, bad: set[str], body: dict[str, Any]
) -> bool:
    """The property, for one router: it routes new sessions to `target`, or /readyz says it
    is not ready and names one of the keys made bad (or the value it refused)."""
    if router.active == target:
        return True
    named = " ".join([str(body.get("error", "")), str(body.get("refused", ""))])
    return body.get("status") != "ready" and any(key in named for key in bad)


@dataclass
class Fuzz:
    redis: RedisServer
    fleet: list[RunningRouter]
    http: aiohttp.ClientSession
    store: RedisStore
    config: Config
    keys: Keys
    target: str = "a"

    def __post_init__(self) -> None:
        self.gates = Gates(GatewayProber(self.config.systems))

    def other(self) -> str:
        return "b" if self.target == "a" else "a"

    async def settled(self, bad: set[str]) -> None:
        """Every router follows `target`, or its /readyz names a key made bad."""

        seen: list[object] = []

        async def check() -> bool:
            for router in self.fleet:
                _, body = await readyz(self.http, router)
                if not follows_or_says_so(router, self.target, bad, body):
                    seen[:] = [router.active, body]
                    return False
            return True

        try:
            await wait_until(check, timeout=10)
        except AssertionError:
            raise AssertionError(
                f"not followed, not named: {bad} -> {self.target}: {seen}"
            ) from None

    async def recovered(self) -> None:
        async def check() -> bool:
            for router in self.fleet:
                status, body = await readyz(self.http, router)
                if router.active != self.target or (status, body["status"]) != (200, "ready"):
                    return False
            return True

        await wait_until(check, timeout=10)

    async def round(self, number: int, plan: list[Corruption]) -> None:
        for corruption in plan:
            for command in corruption.commands():
                self.redis.command(*command)
        bad = {c.key for c in plan}
        # 1. A bare SET switch: followed, or /readyz names the key.
        self.target = self.other()
        self.redis.command("SET", self.keys.active, self.target)
        await self.settled(bad)
        # 2. A switch through token-router: done and followed, or refused in one line.
        try:
            await operations.switch(
                self.store, self.config, self.gates, self.other(), source="fuzz"
            )
        except RouterError:
            pass  # refused (a key of the wrong kind it writes, or a gate): nothing switched
        else:
            self.target = self.other()
            await self.settled(bad)
        # 3. Every admin read and every CLI path answers.
        for router in self.fleet:
            await api_answers(self.http, router)
            async with self.http.post(
                router.admin_url + "/api/switch", json={"system": self.target}, headers=ADMIN_AUTH
            ) as resp:
                assert resp.status < 500 or resp.status == 503, await resp.text()
        await cli_paths(self.store, self.config)
        # 4. Fixed as the hints say: everything recovers, without a restart.
        for corruption in plan:
            self.redis.command("DEL", corruption.now_key)
        self.target = self.other()
        outcome = await operations.switch(
            self.store, self.config, self.gates, self.target, source="fuzz"
        )
        assert outcome.active == self.target, (number, plan)
        await self.recovered()
        # Confirmable again: every router applied the generation the switch wrote.
        await wait_until(
            lambda: all(
                r.server.runtime.holder.current.generation >= outcome.generation for r in self.fleet
            )
        )
        confirmation = await operations.confirm(
            self.store, outcome.generation, timeout=5, heartbeat=FAST["heartbeat_interval"]
        )
        assert not confirmation.timed_out, (number, plan, confirmation)
        await wait_until(self.one_leader)  # a lock taken over shows within a heartbeat

    async def one_leader(self) -> bool:
        async with self.http.get(
            self.fleet[0].admin_url + "/api/instances", headers=ADMIN_AUTH
        ) as resp:
            leaders = [i for i in (await resp.json())["instances"] if i["leader"]]
        return len(leaders) <= 1


async def test_no_value_in_any_key_stops_the_fleet(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    """Issue 25: a property test over every key of the namespace (router/state/keys.py):
    hypothesis draws which keys get which wrong kind or garbage value; while two real
    routers run, each round writes them with raw commands, switches (bare SET and through
    token-router), requires routing to follow or /readyz to name the key, reads every admin
    route and CLI path, then fixes the keys as their hints say (DEL) and requires full
    recovery with no restart: ready, following a switch, confirmed by both routers."""
    config = make_config(redis_server.url, gateways, **FAST)
    fleet = [await routers(config), await routers(config)]
    await wait_until(lambda: all(r.server.runtime.holder.synced for r in fleet))
    sid, _ = await new_token(http, fleet[0])
    await fleet[0].server.runtime.affinity.flush()
    keys = Keys(PREFIX)
    names = namespace_keys(
        keys,
        {
            "kind": "session",
            "ident": sid,
            "system": "a",
            "release": "r1",
            "rollout_id": "r",
            "step": "0",
            "slot": SLOT,
            "nonce": "n1",
            "scope": "admin",
            "part": "all",
        },
    )
    assert keys.generation in names and keys.rollout in names and len(names) >= 20
    store = RedisStore(redis_server.url, keys, timeout=REDIS_TIMEOUT, keyspace_events=False)
    fuzz = Fuzz(redis_server, fleet, http, store, config, keys)
    started = time.monotonic()
    try:
        for number, plan in enumerate(draw(plans(names), ROUNDS)):
            await fuzz.round(number, plan)
    finally:
        await fuzz.gates.prober.close()
        await store.close()
    elapsed = time.monotonic() - started
    print(f"{ROUNDS} rounds over {len(names)} keys in {elapsed:.1f} s")


def nastiest(keys: Keys, key: str) -> list[tuple[str, ...]]:
    """The worst thing found for `key`: a value its readers parse badly, else a wrong kind."""
    worst: dict[str, tuple[str, ...]] = {
        keys.generation: ("SET", key, "notanumber"),
        keys.rollout: ("SET", key, NASTY[15]),
        keys.epoch: ("SET", key, "1"),
        keys.restoring: ("SET", key, "nan"),
        keys.leader: ("SET", key, "nobody"),  # no expiry
        keys.instances: ("HSET", key, "x", NASTY[16]),
        keys.audit: ("XADD", key, "*", "time", "soon", "action", "\x1b[2J"),
        keys.recorded: ("SET", key, "zz"),
        keys.upgrade: ("SET", key, "{not json"),
    }
    return [("DEL", key), worst.get(key, ("RPUSH", key, "x"))]


async def test_every_command_answers_in_one_line_whatever_redis_holds(
    tmp_path: Path,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    """Every key of the namespace made bad at once, then the real command line: documented
    exit codes (0, 2-5), one line for an error, never a traceback; `active` itself of the
    wrong kind too. Fixed, everything works again."""
    config = make_config(redis_server.url, gateways, **FAST)
    fleet = [await routers(config), await routers(config)]
    await wait_until(lambda: all(r.server.runtime.holder.synced for r in fleet))
    sid, _ = await new_token(http, fleet[0])
    keys = Keys(PREFIX)
    holes = {"kind": "session", "ident": sid, "system": "a", "release": "r1", "nonce": "n1"}
    more = {"rollout_id": "r", "step": "0", "slot": SLOT, "scope": "admin", "part": "all"}
    names = namespace_keys(keys, {**holes, **more})
    path = str(write_toml(tmp_path / "r.toml", router_data(redis_server.url, gateways, **FAST)))
    commands = [
        ("status",),
        ("history",),
        ("rollout", "status"),
        ("switch", "b"),
        ("offline", "b", "--force"),
        ("undo",),
    ]
    for active_too in (False, True):
        for key in names:
            if key != keys.active or active_too:
                for command in nastiest(keys, key.replace(SLOT, str(int(time.time())))):
                    redis_server.command(*command)
        for command in commands:
            one_line(await cli(*command, "--config", path), (0, 2, 3, 4, 5))
        for router in fleet:
            await api_answers(http, router)
    for key in names:
        redis_server.command("DEL", key)
    await wait_until(
        lambda: (
            not any(
                r.server.runtime.holder.current.problems or r.server.runtime.holder.degraded
                for r in fleet
            )
        ),
        timeout=20,
    )
    result = await cli("switch", "b", "--config", path)
    one_line(result, (0,))
    assert "applied by 2/2" in result.stdout, result.stdout
    result = await cli("status", "--config", path)
    one_line(result, (0,))
