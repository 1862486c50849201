"""Every `web.AppKey` of the router's aiohttp applications, in one place.

Set by the one wiring point (wiring.py), read by the handlers. A module of its own, above
the types it names and below every handler, so handlers import no wiring and no cycle.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from router.admin.auth import AdminAuth
from router.admin.feed import LiveFeed
from router.admin.templates import Templates
from router.runtime import Runtime
from router.systems.drain import DrainHistory
from router.systems.prober import GatewayProber

# The admin app's view of the process: the runtime the proxy app starts and closes.
RUNTIME = web.AppKey("runtime", Runtime)
# The admin page's sampler and the gateway prober (admin app only).
LIVE = web.AppKey("admin_live", LiveFeed)
HEALTH = web.AppKey("admin_health", GatewayProber)
# The deciding drain counts sampled by this process: the trend on page, API and /metrics.
DRAIN = web.AppKey("admin_drain", DrainHistory)
# Who may use the admin listener: operators' tokens, sessions, the credential throttle.
AUTH = web.AppKey("admin_auth", AdminAuth)
# The admin API's OpenAPI document, built once from its operations and the configured systems.
OPENAPI = web.AppKey("admin_openapi", dict[str, Any])
# The operator page's templates (jinja2 loaded at the first page rendered).
TEMPLATES = web.AppKey("admin_templates", Templates)
