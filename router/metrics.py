"""Prometheus metrics with the official client, correct with `--workers N`.

Per-request counters and histograms are written by each process; with several workers the
supervisor points PROMETHEUS_MULTIPROC_DIR at a private directory before any worker imports
prometheus_client, and a scrape (answered by whichever worker the kernel picks) merges every
worker's files. State gauges (active system, refused value, Redis health, open items) describe
shared state, so they are computed at scrape time by the answering process instead.

Each router owns its registry, so several routers in one process (tests) never collide.
"""

from __future__ import annotations

import os
import time
from collections import Counter as CounterOf
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.drain import Drain
from router.state import StateHolder

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Upstream latency: a token hop is ~1 ms on a LAN, a slow gateway seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The metrics one router process writes on its request path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tokenrouter_requests",
            "Proxied requests by route, system and status (status 0: no answer from upstream).",
            ["route", "system", "status"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "tokenrouter_upstream_seconds",
            "Time from sending a request to a gateway to having its whole answer.",
            ["system", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.switches = Gauge(
            "tokenrouter_switches_observed",
            "Changes of the active system this router applied since it started.",
            registry=r,
            multiprocess_mode="max",
        )
        self.refusals = Gauge(
            "tokenrouter_refused_values_observed",
            "Distinct refused values of <prefix>:active seen since start.",
            registry=r,
            multiprocess_mode="max",
        )
        self.release_cache = Counter(
            "tokenrouter_release_cache",
            "Release file look-ups by result (hit: answered from memory).",
            ["result"],
            registry=r,
        )
        self._hit = self.release_cache.labels("hit")
        self._miss = self.release_cache.labels("miss")
        # This process's own counts, readable without a scrape (the admin page's rates).
        self.local: CounterOf[tuple[str, str, int]] = CounterOf()
        # Children bound once: .labels() costs a dict build and a lock on every call.
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[tuple[str, str], Histogram] = {}

    def observe(self, route: str, system: str, status: int, seconds: float | None) -> None:
        key = (route, system, status)
        self.local[key] += 1
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, system, str(status))
        child.inc()
        if seconds is not None:
            lkey = (system, route)
            hist = self._latency_children.get(lkey)
            if hist is None:
                hist = self._latency_children[lkey] = self.upstream_seconds.labels(system, route)
            hist.observe(seconds)

    def on_release_lookup(self, hit: bool) -> None:
        (self._hit if hit else self._miss).inc()

    def on_switch(self) -> None:
        self.switches.inc()

    def on_refusal(self) -> None:
        self.refusals.inc()


class StateCollector(Collector):
    """Gauges of the shared state, read from the state holder at scrape time."""

    def __init__(self, holder: StateHolder, systems: Sequence[str]) -> None:
        self.holder = holder
        self.systems = systems

    def collect(self) -> Iterator[Metric]:
        holder = self.holder
        snapshot = holder.current
        active = GaugeMetricFamily(
            "tokenrouter_active", "1 for the system that receives new sessions.", labels=["system"]
        )
        offline = GaugeMetricFamily(
            "tokenrouter_offline", "1 for a system marked offline.", labels=["system"]
        )
        for system in self.systems:
            active.add_metric([system], 1.0 if system == snapshot.active else 0.0)
            offline.add_metric([system], 1.0 if snapshot.is_offline(system) else 0.0)
        yield active
        yield offline
        yield GaugeMetricFamily(
            "tokenrouter_refused_active",
            "1 while <prefix>:active holds a value naming no configured system.",
            value=0.0 if snapshot.refused is None else 1.0,
        )
        yield GaugeMetricFamily(
            "tokenrouter_store_up",
            "1 while the state store (Redis) answers; 0 means fail-static.",
            value=0.0 if holder.degraded or not holder.synced else 1.0,
        )
        since = holder.degraded_since
        yield GaugeMetricFamily(
            "tokenrouter_store_degraded_seconds",
            "Seconds since the state store stopped answering (0 when it answers).",
            value=0.0 if since is None else max(0.0, time.time() - since),
        )


def render(
    metrics: Metrics,
    holder: StateHolder,
    systems: Sequence[str],
    drains: Sequence[Drain],
) -> bytes:
    """The exposition text: this process's (or all workers') metrics plus the state gauges."""
    directory = multiprocess_dir()
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry = metrics.registry
    scrape = CollectorRegistry()
    scrape.register(_Merged(registry, StateCollector(holder, systems), drains))
    return generate_latest(scrape)


def drain_families(drains: Sequence[Drain]) -> Iterator[Metric]:
    """The drain decision (router/drain.py) as gauges: the same verdict as page and CLI."""
    families = {
        "open_items": GaugeMetricFamily(
            "tokenrouter_open_items",
            "Sessions and short codes (within shortcode_ttl) a system issued through the "
            "routers, not yet released (the router's count).",
            labels=["system"],
        ),
        "gateway_open": GaugeMetricFamily(
            "tokenrouter_gateway_open_sessions",
            "The gateway's own open-session count (stats_url), where it answers.",
            labels=["system"],
        ),
        "open": GaugeMetricFamily(
            "tokenrouter_drain_open",
            "The count that decides drain: the gateway's where stats_url answers, else the "
            "router's; source says which.",
            labels=["system", "source"],
        ),
        "drained": GaugeMetricFamily(
            "tokenrouter_drained",
            "1 when an idle system holds no calls (the same decision as page and CLI).",
            labels=["system"],
        ),
        "rate": GaugeMetricFamily(
            "tokenrouter_drain_rate",
            "Items per second the deciding count falls (negative: rises), sampled here.",
            labels=["system"],
        ),
        "eta": GaugeMetricFamily(
            "tokenrouter_drain_eta_seconds",
            "Estimated seconds until the deciding count reaches 0, while it falls.",
            labels=["system"],
        ),
    }
    for d in drains:
        if d.router_open is not None:
            families["open_items"].add_metric([d.system], float(d.router_open))
        if d.gateway_open is not None:
            families["gateway_open"].add_metric([d.system], float(d.gateway_open))
        if d.open is not None:
            families["open"].add_metric([d.system, d.source], float(d.open))
        families["drained"].add_metric([d.system], 1.0 if d.drained else 0.0)
        if d.rate is not None:
            families["rate"].add_metric([d.system], d.rate)
        if d.eta is not None:
            families["eta"].add_metric([d.system], d.eta)
    yield from families.values()


class _Merged(Collector):
    def __init__(
        self, registry: CollectorRegistry, state: StateCollector, drains: Sequence[Drain]
    ) -> None:
        self.registry = registry
        self.state = state
        self.drains = drains

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        yield from self.state.collect()
        yield from drain_families(self.drains)
