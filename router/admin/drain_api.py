"""The admin JSON API for a drain that does not end: what holds a system open.

`GET /api/systems/{system}/open-items` lists the items the routers count as open on a system
(tokens not deleted, short codes within shortcode_ttl), oldest first, each with its age and
the router instance that issued it; `token-router open-items` prints the same document.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from router.admin.api import STORE_AWAY, json_response
from router.admin.app_keys import RUNTIME
from router.admin.models import SystemPath
from router.admin.spec import Access, Operation, Params, SystemRef, parse_path, parse_query
from router.errors import ServiceUnavailable, StoreUnavailable
from router.systems.reports import open_items_view


class OpenItemsQuery(Params):
    limit: int = Field(
        50, ge=1, le=1000, description="How many items, oldest first.", examples=[10, 1000]
    )


class OpenItem(BaseModel):
    kind: Literal["session", "code"] = Field(description="A session token or a short code.")
    id: str = Field(description="The token id or the short code.")
    age: float = Field(description="Seconds since it was issued.")
    issued_at: float | None = Field(description="Unix time it was issued, when recorded.")
    issuer: str | None = Field(
        description="The router instance that issued it (host:pid:random), when recorded."
    )
    expires_at: float = Field(description="Unix time it stops counting as open.")


class OpenItems(BaseModel):
    """What holds a system as the routers know it (the gateway's own count may differ)."""

    system: SystemRef
    total: int = Field(description="How many items the routers count as open on it.")
    items: list[OpenItem] = Field(description="The oldest ones, oldest first, up to `limit`.")


async def open_items(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    system = parse_path(request, SystemPath).system
    limit = parse_query(request, OpenItemsQuery).limit
    try:
        doc = await open_items_view(runtime.store, runtime.config, system, limit)
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"cannot read the open items: {exc}") from None
    return json_response(doc)


OPERATIONS = (
    Operation(
        "GET",
        "/api/systems/{system}/open-items",
        open_items,
        summary="What holds a system open: its tokens and short codes, oldest first",
        description="The items the routers count as open on the system (tokens not deleted, "
        "short codes within shortcode_ttl), each with its age and the router instance that "
        "issued it: what to look at when a drain does not end.",
        tag="status",
        access=Access.READ,
        path_params=SystemPath,
        query=OpenItemsQuery,
        ok=OpenItems,
        ok_description="How many, and the oldest ones.",
        errors={ServiceUnavailable: STORE_AWAY},
    ),
)
