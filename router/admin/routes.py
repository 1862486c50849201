"""Every operation of the admin API, gathered from the modules beside their handlers.

The wiring point registers these routes and builds the OpenAPI document from them; a new
handler module adds its `OPERATIONS` here (spec.py explains how to declare one).
"""

from __future__ import annotations

from router.admin import api, drain_api, guarded_api, live, page, releases_api
from router.admin.spec import Operation

OPERATIONS: tuple[Operation, ...] = (
    *api.OPERATIONS,
    *guarded_api.OPERATIONS,
    *live.OPERATIONS,
    *releases_api.OPERATIONS,
    *drain_api.OPERATIONS,
    *page.OPERATIONS,
)
