"""The store operations of guarded switching, against RedisStore (real redis-server) and
MemoryStore alike: compare-and-set, forced switch to an offline system, offline of the
active system, the rollout document's compare-and-set, step counts, the leader lock and
the instance registry."""

from __future__ import annotations

import time

import orjson
import pytest

from router.errors import Conflict, GateRefused
from router.state.memory_store import MemoryStore
from router.state.store import AuditFields
from tests.helpers import wait_until
from tests.state import test_store
from tests.state.test_store import KNOWN, StoreCase

case = test_store.case  # the same fixture: both stores, three handles, a bare SET


async def test_switch_compare_and_set(case: StoreCase) -> None:
    store = case.store
    first = await store.change_active("a", "cli", KNOWN)
    assert (first.previous, first.generation) == ("", 1)
    with pytest.raises(GateRefused) as refused:
        await store.change_active("b", "api", KNOWN, expect="b")
    assert (refused.value.gate, refused.value.system, refused.value.overridable) == (
        "expect",
        "a",
        False,
    )
    assert (await store.read_state()).active == "a"
    done = await store.change_active("b", "api", KNOWN, expect="a", reason="why")
    assert (done.previous, done.generation) == ("a", 2)
    [entry] = await store.audit(1)
    assert (entry.action, entry.reason, entry.forced) == ("switch", "why", False)
    assert (await store.read_state()).generation == 2


async def test_forced_switch_to_offline_system_brings_it_online(case: StoreCase) -> None:
    store = case.store
    await store.change_active("a", "cli", KNOWN)
    await store.set_offline("b", True, "cli")
    with pytest.raises(GateRefused) as refused:
        await store.change_active("b", "cli", KNOWN)
    assert refused.value.gate == "offline"
    await store.change_active("b", "cli", KNOWN, forced=True, reason="r")
    state = await store.read_state()
    assert (state.active, state.offline) == ("b", frozenset())
    entries = await store.audit(2)
    assert [(e.action, e.forced) for e in entries] == [("switch", True), ("online", True)]


async def test_offline_of_the_active_system_is_refused_atomically(case: StoreCase) -> None:
    store = case.store
    await store.change_active("a", "cli", KNOWN)
    with pytest.raises(GateRefused) as refused:
        await store.set_offline("a", True, "cli", refuse_active=True)
    assert refused.value.gate == "active"
    assert (await store.read_state()).offline == frozenset()
    await store.set_offline("a", True, "cli", forced=True, reason="maintenance")
    entry = (await store.audit(1))[0]
    assert (entry.action, entry.forced, entry.reason) == ("offline", True, "maintenance")


async def test_rollout_document_compare_and_set(case: StoreCase) -> None:
    store = case.store
    await store.change_active("a", "cli", KNOWN)
    doc = orjson.dumps({"state": "running", "target": "b", "source": "a"}).decode()
    entry = AuditFields("rollout-start", "api", "a", "b", "steps")
    gen = await store.write_rollout(None, doc, entry, expect_active="a")
    assert (await store.read_state()).rollout == doc
    with pytest.raises(Conflict):  # somebody else's view of "no rollout"
        await store.write_rollout(None, doc, entry)
    with pytest.raises(GateRefused):
        await store.write_rollout(doc, doc, entry, expect_active="b")
    assert await store.write_rollout(doc, None, AuditFields("rollout-abort", "api")) == gen + 1
    assert (await store.read_state()).rollout is None
    actions = [e.action for e in await store.audit(3)]
    assert actions == ["rollout-abort", "rollout-start", "switch"]


async def test_switch_and_bare_set_end_a_running_rollout_once(case: StoreCase) -> None:
    store = case.store
    await store.change_active("a", "cli", KNOWN)
    doc = orjson.dumps({"state": "running", "target": "b", "source": "a"}).decode()
    await store.write_rollout(None, doc, AuditFields("rollout-start", "api", "a", "b"))
    case.bare_set("b")
    for instance in case.instances:  # three instances observe the SET: one record
        await instance.record_observed("external", KNOWN)
    ended = orjson.loads((await store.read_state()).rollout or "{}")
    assert ended["state"] == "ended" and "bare SET" in ended["end_reason"]
    assert [e.action for e in await store.audit(2)] == ["rollout-end", "switch"]
    # A promotion ends it as promoted, audited once as the promote.
    doc = orjson.dumps({"state": "running", "target": "a", "source": "b"}).decode()
    raw = (await store.read_state()).rollout
    await store.write_rollout(raw, doc, AuditFields("rollout-start", "api", "b", "a"))
    await store.change_active("a", "rollout", KNOWN, expect="b", action="promote")
    promoted = orjson.loads((await store.read_state()).rollout or "{}")
    assert promoted["state"] == "promoted"
    assert [e.action for e in await store.audit(2)] == ["promote", "rollout-start"]


async def test_step_counts_add_up_over_instances(case: StoreCase) -> None:
    for instance in case.instances:
        await instance.add_rollout_counts("r1", 0, {"b": (10, 1), "a": (5, 0)})
    assert await case.store.rollout_counts("r1", 0) == {"b": (30, 3), "a": (15, 0)}
    assert await case.store.rollout_counts("r1", 1) == {}


async def test_leader_lock_take_renew_expire(case: StoreCase) -> None:
    one, two = case.instances[0], case.instances[1]
    assert await one.hold_leader("i1", 0.3) is True
    assert await two.hold_leader("i2", 0.3) is False
    assert await one.hold_leader("i1", 0.3) is True  # renewed
    assert await two.leader() == "i1"
    # i1 dies (stops renewing): the lock expires and i2 takes over.
    await wait_until(lambda: two.hold_leader("i2", 0.3), timeout=5)
    assert await one.leader() == "i2"
    await one.release_leader("i1")  # not the holder: no effect
    assert await one.leader() == "i2"
    await two.release_leader("i2")
    assert await one.leader() is None


async def test_instance_registry_drops_stale_entries(case: StoreCase) -> None:
    now = time.time()
    await case.store.heartbeat("i1", {"id": "i1", "seen": now})
    await case.store.heartbeat("i2", {"id": "i2", "seen": now - 10})
    live = await case.store.instances(now, 3.0)
    assert [d["id"] for d in live] == ["i1"]
    # Dropped from the store, not only hidden: a generous reader does not see it again.
    assert [d["id"] for d in await case.store.instances(now, 1000.0)] == ["i1"]
    await case.store.remove_instance("i1")
    assert await case.store.instances(now, 3.0) == []


def test_memory_store_is_a_state_store() -> None:
    assert MemoryStore().generation == 0
