"""App keys of the admin application (a module of its own so handlers avoid import cycles)."""

from __future__ import annotations

from aiohttp import web

from router.proxy import ProxyHandler
from router.runtime import Runtime

RUNTIME = web.AppKey("admin_runtime", Runtime)
PROXY = web.AppKey("admin_proxy", ProxyHandler)
