"""router/systems/reports.py (reports through the drain decision, counts) and
router/systems/stats.py (what a stats_url answers; the probe itself: test_prober.py)."""

from __future__ import annotations

from router.config import build_config
from router.state.keys import Keys
from router.state.memory_store import MemoryStore
from router.state.redis_store import RedisStore
from router.state.snapshot import Snapshot
from router.state.store import AffinityRecord
from router.systems.drain import STATES
from router.systems.reports import audit_json, read_counts, reports
from tests.helpers import HOST, free_port, switch

# --- reports --------------------------------------------------------------------------------

CONFIG = build_config(
    {
        "systems": {
            "a": {
                "gateway": "http://gw-a:8080",
                "public_url": "https://a.example.com",
                "version": "1.0",
            },
            "b": {"gateway": "http://gw-b:8080", "public_url": "https://b.example.com"},
            "c": {"gateway": "http://gw-c:8080", "public_url": "https://c.example.com"},
        }
    },
    {},
)


def test_reports_with_counts() -> None:
    snapshot = Snapshot(active="b", offline=frozenset({"c"}))
    out = reports(CONFIG, snapshot, {"a": 2, "b": 5}, frozenset())
    assert [(r.id, r.drain.states, r.open) for r in out] == [
        ("a", ("draining",), 2),
        ("b", ("active",), 5),
        ("c", ("offline", "drained"), 0),  # missing from the counts: none issued
    ]
    assert all(set(r.drain.states) <= set(STATES) for r in out)
    assert out[0].to_json() == {
        "id": "a",
        "state": "draining",
        "states": ["draining"],
        "badge": "draining",
        "share": 0,
        "drained": False,
        "open": 2,
        "source": "router",
        "router_open": 2,
        "gateway_open": None,
        "gateway_error": None,
        "drain_rate": None,
        "drain_eta": None,
        "stalled": False,
        "stalled_for": None,
        "estimate": "measuring the rate",
        "gateway": "http://gw-a:8080",
        "public_url": "https://a.example.com",
        "version": "1.0",
    }
    assert out[1].to_json()["version"] is None


def test_reports_drained_and_preview() -> None:
    out = reports(CONFIG, Snapshot(active="a"), {"a": 0, "b": 3, "c": 0}, frozenset({"b", "c"}))
    assert [r.drain.states for r in out] == [
        ("active",),
        ("preview", "draining"),  # combinable: previewed while it still holds sessions
        ("preview", "drained"),
    ]


def test_reports_store_away() -> None:
    out = reports(CONFIG, Snapshot(active="a"), None, frozenset())
    assert [(r.state, r.open) for r in out] == [
        ("active", None),
        ("draining", None),
        ("draining", None),
    ]


STATS_CONFIG = build_config(
    {
        "systems": {
            "a": {"gateway": "http://gw-a:8080", "public_url": "https://a.example.com"},
            "b": {
                "gateway": "http://gw-b:8080",
                "public_url": "https://b.example.com",
                "stats_url": "http://gw-b:8080/stats",
            },
        }
    },
    {},
)


def test_reports_gateway_count_decides() -> None:
    """Where stats_url answers, the gateway's count decides; the router's is shown beside."""
    out = reports(STATS_CONFIG, Snapshot(active="a"), {"a": 0, "b": 0}, frozenset(), {"b": (4, "")})
    b = out[1].drain
    assert (b.states, b.open, b.source, b.router_open, b.gateway_open) == (
        ("draining",),
        4,
        "gateway",
        0,
        4,
    )
    out = reports(STATS_CONFIG, Snapshot(active="a"), {"a": 0, "b": 7}, frozenset(), {"b": (0, "")})
    assert out[1].drain.drained  # the gateway says empty: the router's leftovers do not hold it


def test_reports_unknown_probe_count() -> None:
    out = reports(
        STATS_CONFIG, Snapshot(active="a"), {"a": 0, "b": 0}, frozenset(), {"b": (None, "timeout")}
    )
    b = out[1].drain
    assert (b.state, b.open, b.source, b.gateway_error) == ("draining", None, "unknown", "timeout")


async def test_read_counts_and_audit_json() -> None:
    store = MemoryStore()
    await switch(store, "a", "cli:alice", ("a", "b"))
    await store.write_affinity([AffinityRecord("session", "s1", "b", 3600)], 1e12)
    await store.mark_preview("b", 60)
    counts, previewing, error = await read_counts(store, ("a", "b"))
    assert counts == {"a": 0, "b": 1}
    assert previewing == frozenset({"b"})
    assert error == ""
    [entry] = audit_json(await store.audit(10))
    assert (entry["from"], entry["to"], entry["source"], entry["action"]) == (
        "",
        "a",
        "cli:alice",
        "switch",
    )


async def test_read_counts_store_away() -> None:
    store = RedisStore(f"redis://{HOST}:{free_port()}/0", Keys("tokenrouter"), timeout=0.5)
    try:
        counts, previewing, error = await read_counts(store, ("a", "b"))
    finally:
        await store.close()
    assert counts is None
    assert previewing == frozenset()
    assert "unavailable" in error
