"""The admin JSON API: health, readiness, status and the audit log (changes of state:
guarded_api.py).

Every `/api/` call needs an operator's credential, checked by `auth.admin_access` before the
handler runs (`auth.operator_of` names the operator); state changes go through the store's
atomic scripts, so the API, the CLI and a bare `redis-cli SET` are recorded alike.
Each route, its request and answer shapes and its error answers are declared once, in
`OPERATIONS` at the end (spec.py explains the declaration; openapi.py builds the document).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from router.admin.app_keys import DRAIN, HEALTH, RUNTIME
from router.admin.auth import audit_source
from router.admin.models import (
    Audit,
    AuditQuery,
    Liveness,
    Readiness,
    Status,
)
from router.admin.spec import (
    Access,
    Answer,
    Content,
    Operation,
    parse_query,
)
from router.errors import ServiceUnavailable, StoreUnavailable
from router.metrics import CONTENT_TYPE as METRICS_TYPE
from router.metrics import InstanceFacts, render
from router.responses import JSON_TYPE
from router.state import rollout as rollout_model
from router.state.recovery import persistence_risk
from router.systems.reports import (
    SystemReport,
    audit_json,
    read_counts,
    view_report,
)
from router.systems.view import View


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type=JSON_TYPE,
        headers={"Cache-Control": "no-store"},
    )


def source_of(request: web.Request) -> str:
    """Who made a change, for the audit stream: `auth.audit_source` (operator and address)."""
    return audit_source(request)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Deliberately independent of Redis and the gateways."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness for a load balancer.

    503 while starting (the active system is not known yet) and while stopping (so the
    balancer drains this instance first). A Redis outage after start, or a key of the
    namespace holding something unusable (named in `problems`), is 200 "degraded":
    routing continues on the last known state, and taking every instance out of a balancer
    because Redis blinked would turn fail-static into an outage.
    """
    runtime = request.app[RUNTIME]
    holder = runtime.holder
    if runtime.stopping:
        return json_response({"status": "stopping"}, 503)
    if not holder.synced:
        return json_response(
            {"status": "starting", "error": holder.public_error or "state not read yet"}, 503
        )
    problems = holder.current.problems
    body: dict[str, Any] = {"status": "degraded" if holder.degraded or problems else "ready"}
    if holder.degraded:
        # Anyone may ask: the endpoint of Redis (host, port, user) is in the log and in the
        # authenticated /api/status, not here.
        body["error"] = holder.public_error
    elif problems:
        body["error"] = problems[0].message
    if problems:
        # Still 200: every router reads the same keys, and taking the whole fleet out of a
        # balancer over one would turn a bad value into an outage.
        body["problems"] = [p.to_json() for p in problems]
    if holder.current.refused is not None:
        body["refused"] = holder.current.refused.value
        body["refused_reason"] = holder.current.refused.reason
    return json_response(body)


async def system_reports(app: web.Application) -> tuple[View, list[SystemReport], str]:
    """The view model (router/systems/view.py) and every system's report in it: the routers' counts
    from the store, the gateways' own counts (stats_url) from the prober, the trend from this
    process's samples. Also the store's error, if it did not answer."""
    runtime = app[RUNTIME]
    config = runtime.config
    counts, previewing, count_error = await read_counts(runtime.store, config.system_ids)
    probes = await app[HEALTH].gateway_counts()
    watch = None if runtime.watch is None else runtime.watch.current
    view, rows = view_report(
        config, runtime.holder.current, counts, previewing, probes, app[DRAIN], watch=watch
    )
    return view, rows, count_error


async def status_document(app: web.Application) -> dict[str, Any]:
    runtime = app[RUNTIME]
    holder = runtime.holder
    snapshot = holder.current
    view, rows, count_error = await system_reports(app)
    refused = snapshot.refused
    return {
        "active": snapshot.active,
        **view.to_json(),
        # One version per system on every surface: the label of the release it serves (as
        # the page shows it), the configured version until a check has named one.
        "systems": [
            {**r.to_json(), "version": runtime.releases.view.label_of(r.id) or r.version or None}
            for r in rows
        ],
        "offline": sorted(snapshot.offline),
        "refused": None
        if refused is None
        else {"value": refused.value, "since": refused.since, "reason": refused.reason},
        "store": {
            "url": runtime.store.description,
            "synced": holder.synced,
            "degraded": holder.degraded,
            "degraded_since": holder.degraded_since,
            "error": holder.last_error
            or "; ".join(p.message for p in snapshot.problems)
            or count_error
            or None,
            "problems": [p.to_json() for p in snapshot.problems],
            "last_sync": holder.last_sync,
            # How Redis persists its data: aof, rdb, aof+rdb, none, unknown, memory.
            "persistence": runtime.persistence or "unknown",
            "risk": persistence_risk(runtime.persistence or "unknown", runtime.store.description)
            or None,
        },
        "instance": runtime.instance,
        "uptime": round(time.time() - runtime.started_at, 3),
    }


async def status(request: web.Request) -> web.Response:
    return json_response(await status_document(request.app))


async def audit(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    query = parse_query(request, AuditQuery)
    try:
        # One more than asked: whether a next page exists, without an empty last page.
        entries = await runtime.store.audit(query.count + 1, before=query.before, since=query.since)
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"cannot read the audit stream: {exc}") from None
    page = entries[: query.count]
    more = len(entries) > query.count
    return json_response({"entries": audit_json(page), "next": page[-1].id if more else None})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition: request counters, upstream latency, state gauges."""
    runtime = request.app[RUNTIME]
    _, rows, _ = await system_reports(request.app)
    try:
        rollout = rollout_model.loads((await runtime.store.read_state()).rollout)
    except StoreUnavailable:
        rollout = None  # store_up says why; the rollout families are left empty
    facts = InstanceFacts(
        ready=not runtime.stopping and runtime.holder.synced,
        persistence=runtime.persistence,
        rollout=rollout,
        watch=None if runtime.watch is None else runtime.watch.current,
    )
    body = render(
        runtime.metrics, runtime.holder, runtime.config.system_ids, [r.drain for r in rows], facts
    )
    return web.Response(body=body, headers={"Content-Type": METRICS_TYPE})


STORE_DOWN = "The state store (Redis) is unavailable: nothing was changed."
# The same refusal for a read: nothing could be read.
STORE_AWAY = "Redis is unavailable."

OPERATIONS = (
    Operation(
        "GET",
        "/healthz",
        healthz,
        summary="Liveness: the process answers",
        tag="probes",
        access=Access.PUBLIC,
        ok=Liveness,
    ),
    Operation(
        "GET",
        "/readyz",
        readyz,
        summary="Readiness for a load balancer",
        description="200 ready, or degraded (Redis away: routing on the last known state); "
        "503 while starting or stopping.",
        tag="probes",
        access=Access.PUBLIC,
        ok=Readiness,
        ok_description="Ready, or degraded with the error.",
        answers={503: Answer("Starting or stopping.", Readiness)},
    ),
    Operation(
        "GET",
        "/metrics",
        metrics,
        summary="Prometheus metrics: request counters, upstream latency, state gauges",
        tag="probes",
        access=Access.PUBLIC,
        ok=Content(METRICS_TYPE.split(";")[0], {"type": "string"}),
        ok_description="Prometheus text exposition format.",
    ),
    Operation(
        "GET",
        "/api/status",
        status,
        summary="Active system, every system's state and open count, store health",
        tag="status",
        access=Access.READ,
        ok=Status,
        ok_description="The current status.",
    ),
    Operation(
        "GET",
        "/api/audit",
        audit,
        summary="The audit stream, newest first, a page at a time",
        tag="status",
        access=Access.READ,
        query=AuditQuery,
        ok=Audit,
        ok_description="Entries, newest first.",
        errors={ServiceUnavailable: STORE_AWAY},
    ),
)
