"""The admin JSON API for releases: what is stored, what each system serves, check now.

`GET /api/releases` reads the shared store (every instance answers alike);
`POST /api/releases/refresh` fingerprints the systems from this instance at once and writes
the result to the store, where the other instances pick it up within their resync_interval.
Both need an operator's credential, like every /api/ route.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from router.admin.api import STORE_AWAY, json_response
from router.admin.app_keys import RUNTIME
from router.admin.models import Refresh, RefreshQuery, Releases
from router.admin.spec import Access, Operation, parse_query
from router.errors import ServiceUnavailable, StoreUnavailable


async def releases(request: web.Request) -> web.Response:
    parts = request.app[RUNTIME].releases
    view, checker = parts.view, parts.checker
    try:
        stored, serving = await view.listing()
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"cannot read the releases: {exc}") from None
    systems: dict[str, Any] = {}
    for system in view.system_ids:
        systems[system] = {
            "release": serving.get(system),
            "label": view.label_of(system),
            "error": checker.errors.get(system) or None,
        }
    return json_response(
        {
            "releases": [m.to_json() for m in stored],
            "systems": systems,
            "last_check": checker.last_check,
            "store_error": parts.files.store_error or None,
        }
    )


async def refresh(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    wanted = list(dict.fromkeys(parse_query(request, RefreshQuery).system))
    results = await runtime.releases.checker.refresh(wanted or None)
    return json_response({"results": [r.to_json() for r in results]})


OPERATIONS = (
    Operation(
        "GET",
        "/api/releases",
        releases,
        summary="Stored client-library releases and what each system serves",
        tag="releases",
        access=Access.READ,
        ok=Releases,
        errors={ServiceUnavailable: STORE_AWAY},
    ),
    Operation(
        "POST",
        "/api/releases/refresh",
        refresh,
        summary="Fingerprint every system's client libraries now",
        description="Fetches the library files from each system, stores a new release's bytes "
        "and makes every instance hand it out. A system whose libraries cannot be fetched "
        "keeps its release; its result carries the error.",
        tag="releases",
        access=Access.WRITE,
        query=RefreshQuery,
        ok=Refresh,
        ok_description="One result per system checked.",
    ),
)
