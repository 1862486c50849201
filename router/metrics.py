"""Prometheus metrics with the official client, correct with `--workers N`.

Per-request counters and histograms are written by each process; with several workers the
supervisor points PROMETHEUS_MULTIPROC_DIR at a private directory before any worker imports
prometheus_client, and a scrape (answered by whichever worker the kernel picks) merges every
worker's files. State gauges (active system, refused value, Redis health, open items) describe
shared state, so they are computed at scrape time by the answering process instead.

Each router owns its registry, so several routers in one process (tests) never collide.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from bisect import bisect_left
from collections import Counter as CounterOf
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from router.state.rollout import Rollout
from router.state.snapshot import StateHolder
from router.state.watch import ALARM, LATENCY_BUCKETS, STATES, Watch
from router.systems.drain import Drain

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Event-loop stalls (router/server/loop_probe.py): SPEC allows none over 1 ms from background work.
STALL_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


REQUESTS_HELP = "Proxied requests by route, system and status (status 0: no answer from upstream)."
UPSTREAM_HELP = "Time from sending a request to a gateway to having its whole answer."


class Metrics:
    """The metrics one router process writes on its request path.

    The two per-request families (requests, upstream latency) are plain counters in one
    process, turned into exposition only when scraped (`_PerRequest`): prometheus_client's
    Counter and Histogram take a lock and walk their buckets on every observation (~3-5 µs a
    request here, issue 14). With `--workers N` (multiprocess mode) the scrape merges every
    worker's files, which only prometheus_client's own values write: there they stay.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.shared = multiprocess_dir() is not None
        self.requests: Counter | None = None
        self.upstream_seconds: Histogram | None = None
        if self.shared:
            self.requests = Counter(
                "tokenrouter_requests", REQUESTS_HELP, ["route", "system", "status"], registry=r
            )
            self.upstream_seconds = Histogram(
                "tokenrouter_upstream_seconds",
                UPSTREAM_HELP,
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
        self.loop_stalls = Histogram(
            "tokenrouter_loop_stall_seconds",
            "Event-loop stalls over 1 ms: how late a 2 ms kernel timer tick ran"
            " (router/server/loop_probe.py).",
            buckets=STALL_BUCKETS,
            registry=r,
        )
        self.loop_stall_max = Gauge(
            "tokenrouter_loop_stall_max_seconds",
            "The longest event-loop stall since this process started.",
            registry=r,
            multiprocess_mode="max",
        )
        self._hit = self.release_cache.labels("hit")
        self._miss = self.release_cache.labels("miss")
        # This process's own counts, readable without a scrape (the admin page's rates).
        self.local: CounterOf[tuple[str, str, int]] = CounterOf()
        # Children bound once: .labels() costs a dict build and a lock on every call.
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[tuple[str, str], Histogram] = {}
        # This process: (system, route) -> per-bucket counts (the last for +Inf) and the sum.
        self.latency_counts: dict[tuple[str, str], list[int]] = {}
        self.latency_sums: dict[tuple[str, str], float] = {}
        self._stall_max = 0.0
        if not self.shared:
            r.register(_PerRequest(self))

    def observe(self, route: str, system: str, status: int, seconds: float | None) -> None:
        key = (route, system, status)
        self.local[key] += 1
        # This process's own buckets, in both modes: the post-switch watch and the rollout
        # controller read them (switching/ledger.py) without a scrape.
        if seconds is not None:
            lkey = (system, route)
            counts = self.latency_counts.get(lkey)
            if counts is None:
                counts = self.latency_counts[lkey] = [0] * (len(LATENCY_BUCKETS) + 1)
                self.latency_sums[lkey] = 0.0
            counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.latency_sums[lkey] += seconds
        if not self.shared:
            return
        assert self.requests is not None and self.upstream_seconds is not None
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

    def on_loop_stall(self, seconds: float) -> None:
        self.loop_stalls.observe(seconds)
        if seconds > self._stall_max:
            self._stall_max = seconds
            self.loop_stall_max.set(seconds)

    def on_release_lookup(self, hit: bool) -> None:
        (self._hit if hit else self._miss).inc()

    def on_switch(self) -> None:
        self.switches.inc()

    def on_refusal(self) -> None:
        self.refusals.inc()


class _PerRequest(Collector):
    """tokenrouter_requests and tokenrouter_upstream_seconds of one process, at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(
            "tokenrouter_requests", REQUESTS_HELP, labels=["route", "system", "status"]
        )
        for (route, system, status), n in list(m.local.items()):
            requests.add_metric([route, system, str(status)], float(n))
        yield requests
        latency = HistogramMetricFamily(
            "tokenrouter_upstream_seconds", UPSTREAM_HELP, labels=["system", "route"]
        )
        bounds = [floatToGoString(b) for b in (*LATENCY_BUCKETS, math.inf)]  # type: ignore[no-untyped-call]
        for (system, route), counts in list(m.latency_counts.items()):
            cumulative = list(itertools.accumulate(counts))
            latency.add_metric(
                [system, route],
                list(zip(bounds, map(float, cumulative), strict=True)),
                sum_value=m.latency_sums[(system, route)],
            )
        yield latency


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
            "1 while <prefix>:active holds a value routing refused (naming no configured"
            " system, or a system marked offline).",
            value=0.0 if snapshot.refused is None else 1.0,
        )
        yield GaugeMetricFamily(
            "tokenrouter_unusable_keys",
            "Keys in the router's Redis namespace holding what it cannot use (/readyz names).",
            value=float(len(snapshot.problems)),
        )
        share = snapshot.rollout
        rollout = GaugeMetricFamily(
            "tokenrouter_rollout_percent",
            "Share of new sessions a running progressive rollout sends to each system.",
            labels=["system"],
        )
        for system in self.systems:
            percent = 0.0
            if share is not None and share.target == system:
                percent = round(share.fraction * 100, 3)
            rollout.add_metric([system], percent)
        yield rollout
        yield GaugeMetricFamily(
            "tokenrouter_state_generation",
            "Generation of the shared state this instance applied (see /api/instances).",
            value=float(snapshot.generation),
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


@dataclass(frozen=True, slots=True)
class InstanceFacts:
    """What the alerts need of this instance beyond the snapshot, read by the scrape handler."""

    ready: bool  # /readyz answers 200 (ready or degraded), not starting or stopping
    persistence: str  # how Redis persists its data (store.persistence_mode), "" not known yet
    rollout: Rollout | None  # the current or last rollout document, None when none (or unread)
    watch: Watch | None = None  # the post-switch watch this instance last read, if any


# prometheus_client's multiprocess files are named <kind>[_<mode>]_<pid>.db.
_PID_FILE = re.compile(r"_(\d+)\.db$")


def _resident_bytes(pid: int) -> int | None:
    """RSS of `pid` from /proc (Linux); None where it cannot be read (gone, not Linux)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _processes() -> list[tuple[str, int]]:
    """This instance's processes: this one alone, or with `--workers N` the supervisor and
    every worker that wrote metrics (a scrape is answered by one worker, the pod holds all)."""
    directory = multiprocess_dir()
    if not directory:
        return [("worker", os.getpid())]
    try:
        names = os.listdir(directory)
    except OSError:
        names = []
    workers = {int(m.group(1)) for name in names if (m := _PID_FILE.search(name))}
    workers.add(os.getpid())
    return [("supervisor", os.getppid()), *(("worker", pid) for pid in sorted(workers))]


def watch_families(w: Watch | None, now: float) -> Iterator[Metric]:
    """The post-switch watch (state/watch.py) as gauges: its state, what it measured and
    the time left; absent before the first watch."""
    state = GaugeMetricFamily(
        "tokenrouter_watch_state",
        "1 for the state of the watch of the last change of the active system (watching,"
        " passed, undone, alarm, ended).",
        labels=["system", "previous", "state"],
    )
    left = GaugeMetricFamily(
        "tokenrouter_watch_seconds_left",
        "Seconds the post-switch watch still runs (0 once it ended).",
    )
    alarm = GaugeMetricFamily(
        "tokenrouter_watch_alarm",
        "1 when the watch found a breach and could not undo (old system offline or failing).",
    )
    ratio = GaugeMetricFamily(
        "tokenrouter_watch_error_ratio",
        "Failed share of token requests the watch measured: the new system (of=current) and"
        " the old one before the switch (of=baseline).",
        labels=["system", "of"],
    )
    requests = GaugeMetricFamily(
        "tokenrouter_watch_requests",
        "Token requests behind tokenrouter_watch_error_ratio.",
        labels=["system", "of"],
    )
    p99 = GaugeMetricFamily(
        "tokenrouter_watch_p99_seconds",
        "p99 of the gateway's token answers the watch measured (from the routers' histograms).",
        labels=["system", "of"],
    )
    if w is not None:
        for name in STATES:
            state.add_metric([w.system, w.previous, name], 1.0 if w.state == name else 0.0)
        left.add_metric([], w.left(now))
        alarm.add_metric([], 1.0 if w.state == ALARM else 0.0)
        for of, system, t in (
            ("current", w.system, w.current),
            ("baseline", w.previous, w.baseline),
        ):
            if t is None:
                continue
            ratio.add_metric([system, of], t.share)
            requests.add_metric([system, of], float(t.requests))
            value = t.p99(LATENCY_BUCKETS)
            if value is not None:
                p99.add_metric([system, of], value)
    yield from (state, left, alarm, ratio, requests, p99)


def instance_families(facts: InstanceFacts) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "tokenrouter_ready",
        "1 while /readyz answers 200 (ready, or degraded on the last known state); 0 while"
        " starting or stopping.",
        value=1.0 if facts.ready else 0.0,
    )
    persistence = GaugeMetricFamily(
        "tokenrouter_store_persistence",
        "1 for how Redis persists its data: aof, rdb, aof+rdb, none (a restart loses the"
        " state), unknown (CONFIG refused), memory (memory://).",
        labels=["mode"],
    )
    persistence.add_metric([facts.persistence or "unknown"], 1.0)
    yield persistence
    labels = ["target", "source", "state"]
    state = GaugeMetricFamily(
        "tokenrouter_rollout_state",
        "1 for the current or last progressive rollout and its state: running, paused,"
        " promoted, aborted, ended.",
        labels=labels,
    )
    ended = GaugeMetricFamily(
        "tokenrouter_rollout_ended_timestamp_seconds",
        "When the last progressive rollout ended (promoted, aborted or ended), Unix time.",
        labels=labels,
    )
    r = facts.rollout
    if r is not None:
        state.add_metric([r.target, r.source, r.state], 1.0)
        if r.ended_at is not None:
            ended.add_metric([r.target, r.source, r.state], r.ended_at)
    yield state
    yield ended
    rss = GaugeMetricFamily(
        "tokenrouter_resident_memory_bytes",
        "Resident memory of each of this instance's processes (the supervisor and each worker"
        " with --workers N), read from /proc at scrape time.",
        labels=["role", "pid"],
    )
    for role, pid in _processes():
        size = _resident_bytes(pid)
        if size is not None:
            rss.add_metric([role, str(pid)], float(size))
    yield rss
    yield from watch_families(facts.watch, time.time())


def render(
    metrics: Metrics,
    holder: StateHolder,
    systems: Sequence[str],
    drains: Sequence[Drain],
    facts: InstanceFacts | None = None,
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
    scrape.register(_Merged(registry, StateCollector(holder, systems), drains, facts))
    return generate_latest(scrape)


def drain_families(drains: Sequence[Drain]) -> Iterator[Metric]:
    """The view of each system (router/systems/view.py) as gauges: the same verdict as page and
    CLI. The rate keeps the one sign: positive falls."""
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
        "stalled": GaugeMetricFamily(
            "tokenrouter_drain_stalled",
            "1 when a draining system's count has not fallen for router.drain_stall_after"
            " (the same 'stalled' as page and CLI), sampled here.",
            labels=["system"],
        ),
        "share": GaugeMetricFamily(
            "tokenrouter_new_sessions_percent",
            "Percent of new sessions each system gets now (the active one's, a rollout's split).",
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
        families["stalled"].add_metric([d.system], 1.0 if d.stalled else 0.0)
        families["share"].add_metric([d.system], float(d.share))
    yield from families.values()


class _Merged(Collector):
    def __init__(
        self,
        registry: CollectorRegistry,
        state: StateCollector,
        drains: Sequence[Drain],
        facts: InstanceFacts | None,
    ) -> None:
        self.registry = registry
        self.state = state
        self.drains = drains
        self.facts = facts

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        yield from self.state.collect()
        yield from drain_families(self.drains)
        if self.facts is not None:
            yield from instance_families(self.facts)
