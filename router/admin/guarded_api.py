"""The admin API of guarded switching: switch, undo, offline/online, rollouts, instances.

Every handler parses and validates its body (bad input: 400, nothing written), then calls
operations.py, the same code the CLI runs; a gate's refusal is 409 JSON naming the gate
(`{"error": "refused", "gate": "health", ...}`). Changes answer once every live instance has
applied them (or after `confirm_timeout`, naming the laggards).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from router.admin.api import STORE_AWAY, STORE_DOWN, json_response, source_of
from router.admin.app_keys import RUNTIME
from router.admin.models import (
    GuardedSwitchRequest,
    GuardedSwitchResult,
    GuardRequest,
    Instances,
    OfflineResult,
    RolloutAnswer,
    RolloutDocument,
    SystemPath,
)
from router.admin.models import RolloutRequest as RolloutBody
from router.admin.spec import Access, Handler, Operation, parse_body, parse_path
from router.errors import Conflict, GateRefused, RequestError, ServiceUnavailable, StoreUnavailable
from router.runtime import Runtime
from router.switching import operations
from router.switching.fleet import STALE_BEATS
from router.switching.gates import Gates
from router.switching.operations import RolloutRequest
from router.switching.outcomes import Confirmation
from router.systems.view import fleet_summary

GATE = "Refused by a safety gate (`gate` names it; `force` overrides all but `expect`)."


def _source(request: web.Request, body: GuardRequest) -> str:
    return source_of(request)


def _gates(runtime: Runtime) -> Gates:
    assert runtime.gates is not None
    return runtime.gates


async def confirmed(runtime: Runtime, generation: int) -> Confirmation:
    """Apply here at once, then wait for the rest of the fleet (bounded)."""
    await runtime.watcher.nudge()
    r = runtime.config.router
    return await operations.confirm(
        runtime.store, generation, timeout=r.confirm_timeout, heartbeat=r.heartbeat_interval
    )


def _unavailable(what: str, exc: StoreUnavailable) -> ServiceUnavailable:
    return ServiceUnavailable(f"cannot {what}: {exc}")


async def switch(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = await parse_body(request, GuardedSwitchRequest)
    try:
        outcome = await operations.switch(
            runtime.store,
            runtime.config,
            _gates(runtime),
            body.system,
            source=_source(request, body),
            expect=body.expect,
            force=body.force,
            reason=body.reason,
        )
        confirmation = await confirmed(runtime, outcome.generation)
    except StoreUnavailable as exc:
        raise _unavailable("switch", exc) from None
    done = replace(outcome, confirmation=confirmation)
    return json_response({**done.to_json(), "message": done.text()})


async def undo(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = await parse_body(request, GuardRequest)
    try:
        outcome = await operations.undo(
            runtime.store,
            runtime.config,
            _gates(runtime),
            source=_source(request, body),
            force=body.force,
            reason=body.reason,
        )
        confirmation = await confirmed(runtime, outcome.generation)
    except StoreUnavailable as exc:
        raise _unavailable("undo", exc) from None
    done = replace(outcome, confirmation=confirmation)
    return json_response({**done.to_json(), "message": done.text("undone:")})


async def _set_offline(request: web.Request, offline: bool) -> web.Response:
    runtime = request.app[RUNTIME]
    system = parse_path(request, SystemPath).system
    body = await parse_body(request, GuardRequest)
    try:
        await operations.set_offline(
            runtime.store,
            runtime.config,
            _gates(runtime).prober,
            system,
            offline,
            source=_source(request, body),
            force=body.force,
            reason=body.reason,
        )
    except StoreUnavailable as exc:
        raise _unavailable(f"change {system!r}", exc) from None
    await runtime.watcher.nudge()
    return json_response({"system": system, "offline": offline})


async def offline(request: web.Request) -> web.Response:
    return await _set_offline(request, True)


async def online(request: web.Request) -> web.Response:
    return await _set_offline(request, False)


async def instances_document(runtime: Runtime) -> dict[str, Any]:
    r = runtime.config.router
    live = await runtime.store.instances(time.time(), r.heartbeat_interval * STALE_BEATS)
    generation = max(
        [runtime.holder.current.generation]
        + [int((d.get("applied") or {}).get("generation", 0)) for d in live]
    )
    for doc in live:
        doc["current"] = int((doc.get("applied") or {}).get("generation", 0)) >= generation
    behind = [d["id"] for d in live if not d["current"]]
    return {
        "generation": generation,
        "stale_after": r.heartbeat_interval * STALE_BEATS,
        "instances": live,
        "behind": behind,
        "summary": fleet_summary(len(live), behind),
    }


async def instances(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        return json_response(await instances_document(runtime))
    except StoreUnavailable as exc:
        raise _unavailable("list the instances", exc) from None


async def rollout_get(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        view = await operations.rollout_view(runtime.store, time.time())
    except StoreUnavailable as exc:
        raise _unavailable("read the rollout", exc) from None
    return json_response({"rollout": view})


async def _rollout_answer(runtime: Runtime, generation: int) -> web.Response:
    confirmation = await confirmed(runtime, generation)
    view = await operations.rollout_view(runtime.store, time.time())
    return json_response({"rollout": view, "confirmation": confirmation.to_json()})


async def rollout_start(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = await parse_body(request, RolloutBody)
    parsed = RolloutRequest.parse(runtime.config, body.model_dump())
    try:
        _, generation = await operations.start_rollout(
            runtime.store,
            runtime.config,
            _gates(runtime),
            parsed,
            source=_source(request, body),
            force=body.force,
            reason=body.reason,
        )
        response = await _rollout_answer(runtime, generation)
    except StoreUnavailable as exc:
        raise _unavailable("start the rollout", exc) from None
    response.set_status(201)
    return response


async def _rollout_action(request: web.Request, action: str) -> web.Response:
    runtime = request.app[RUNTIME]
    body = await parse_body(request, GuardRequest)
    source, reason = _source(request, body), body.reason
    try:
        if action == "pause":
            _, generation = await operations.pause_rollout(
                runtime.store, source=source, reason=reason
            )
        elif action == "resume":
            _, generation = await operations.resume_rollout(
                runtime.store, source=source, reason=reason
            )
        elif action == "abort":
            _, generation = await operations.abort_rollout(
                runtime.store, source=source, reason=reason
            )
        else:
            outcome = await operations.promote_rollout(
                runtime.store,
                runtime.config,
                _gates(runtime),
                source=source,
                force=body.force,
                reason=reason,
            )
            generation = outcome.generation
        return await _rollout_answer(runtime, generation)
    except StoreUnavailable as exc:
        raise _unavailable(f"{action} the rollout", exc) from None


async def rollout_pause(request: web.Request) -> web.Response:
    return await _rollout_action(request, "pause")


async def rollout_resume(request: web.Request) -> web.Response:
    return await _rollout_action(request, "resume")


async def rollout_promote(request: web.Request) -> web.Response:
    return await _rollout_action(request, "promote")


async def rollout_abort(request: web.Request) -> web.Response:
    return await _rollout_action(request, "abort")


def _write(
    method_path: tuple[str, str],
    handler: Handler,
    summary: str,
    ok: type[BaseModel],
    errors: dict[type[RequestError], str],
    **extra: Any,
) -> Operation:
    return Operation(
        method_path[0],
        method_path[1],
        handler,
        summary=summary,
        tag="actions",
        access=Access.WRITE,
        ok=ok,
        errors={**errors, ServiceUnavailable: STORE_DOWN},
        **extra,
    )


NO_ROLLOUT = "No rollout is running (or it is not in a state for this)."
OPERATIONS = (
    _write(
        ("POST", "/api/switch"),
        switch,
        "Make a system active through the gates (optionally compare-and-set)",
        GuardedSwitchResult,
        {GateRefused: GATE},
        body=GuardedSwitchRequest,
        description="Gates: the target is not offline and its gateway answered a health probe "
        "within gate_probe_age seconds (probed now if not); `expect` is a compare-and-set. "
        "Answers once every live instance applied it (or names the laggards).",
        ok_description="Switched (or already active), with the propagation confirmation.",
    ),
    _write(
        ("POST", "/api/undo"),
        undo,
        "Switch back to the system active before the last switch, through the gates",
        GuardedSwitchResult,
        {GateRefused: GATE, Conflict: "Nothing to undo."},
        body=GuardRequest,
        ok_description="Switched back, with the propagation confirmation.",
    ),
    _write(
        ("POST", "/api/systems/{system}/offline"),
        offline,
        "Mark a system offline: its requests get 503 at once (the active one, or one that "
        "still holds calls, only with force)",
        OfflineResult,
        {
            GateRefused: "The system is the active one (gate 'active') or still holds calls "
            "(gate 'open', the count named); force overrides."
        },
        path_params=SystemPath,
        body=GuardRequest,
        ok_description="Marked offline (or already offline).",
    ),
    _write(
        ("POST", "/api/systems/{system}/online"),
        online,
        "Bring a system back online",
        OfflineResult,
        {},
        path_params=SystemPath,
        body=GuardRequest,
        ok_description="Online (or already online).",
    ),
    Operation(
        "GET",
        "/api/instances",
        instances,
        summary="Live router instances and the state each applied",
        tag="status",
        access=Access.READ,
        ok=Instances,
        ok_description="Live instances (stale ones dropped).",
        errors={ServiceUnavailable: STORE_AWAY},
    ),
    Operation(
        "GET",
        "/api/rollout",
        rollout_get,
        summary="The current (or last) rollout: step, share, countdown, counts",
        tag="status",
        access=Access.READ,
        ok=RolloutDocument,
        ok_description="The rollout, or null.",
        errors={ServiceUnavailable: STORE_AWAY},
    ),
    _write(
        ("POST", "/api/rollout"),
        rollout_start,
        "Start a progressive rollout of new sessions to a system",
        RolloutAnswer,
        {GateRefused: GATE, Conflict: "A rollout is already running."},
        body=RolloutBody,
        ok_status=201,
        ok_description="Started, with the propagation confirmation.",
    ),
    _write(
        ("POST", "/api/rollout/pause"),
        rollout_pause,
        "Hold the current share",
        RolloutAnswer,
        {Conflict: NO_ROLLOUT},
        body=GuardRequest,
    ),
    _write(
        ("POST", "/api/rollout/resume"),
        rollout_resume,
        "Let the steps advance again",
        RolloutAnswer,
        {Conflict: NO_ROLLOUT},
        body=GuardRequest,
    ),
    _write(
        ("POST", "/api/rollout/promote"),
        rollout_promote,
        "Straight to 100 %: the target becomes active (through the gates)",
        RolloutAnswer,
        {GateRefused: GATE, Conflict: NO_ROLLOUT},
        body=GuardRequest,
    ),
    _write(
        ("POST", "/api/rollout/abort"),
        rollout_abort,
        "Share to 0 at once; the active system is unchanged",
        RolloutAnswer,
        {Conflict: NO_ROLLOUT},
        body=GuardRequest,
    ),
)
