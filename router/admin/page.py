"""The operator's page: login, logout, the cockpit itself, and the API's human docs view.

Rendered with jinja2 from `templates/` (loaded at the first page shown: templates.py),
styled and scripted from `static/` (no CDN, no build step). The page reads the same live
document as `/api/live`; its actions call the JSON API with the login session's CSRF token,
so the page can do nothing the API cannot.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiohttp import web

from router.admin.app_keys import AUTH, OPENAPI, RUNTIME, TEMPLATES
from router.admin.assets import Assets
from router.admin.auth import same_origin
from router.admin.live import live_document
from router.admin.session import COOKIE, CSRF_FIELD
from router.admin.spec import Access, Content, Operation
from router.admin.templates import Templates
from router.errors import TooManyAttempts, Unauthorized

log = logging.getLogger("router.admin.page")

LOGIN_PATH = "/login"


def setup_templates(app: web.Application, assets: Assets) -> None:
    app[TEMPLATES] = Templates(assets)
    app.router.add_static(STATIC_PREFIX, assets.static, name="static", append_version=False)


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _login_page(
    request: web.Request, status: int = 200, message: str = "", kind: str = "error"
) -> web.Response:
    auth = request.app[AUTH]
    context: dict[str, Any] = {
        "enabled": auth.enabled,
        "csrf": auth.sessions.login_token(),
        "message": message,
        "message_kind": kind,
    }
    if not auth.enabled:
        context["message"] = (
            "Admin login is disabled: set router.admin_token (or admin_token_file) or "
            "[router.admin_tokens] in the router's configuration."
        )
        status = 403
    return request.app[TEMPLATES].render("login.html", context, status)


async def login_form(request: web.Request) -> web.Response:
    if await request.app[AUTH].session(request) is not None:
        return _redirect("/")
    if "out" in request.query:
        return _login_page(request, message="You are logged out.", kind="info")
    return _login_page(request)


def _secure(request: web.Request) -> bool:
    """Mark the cookie Secure when the browser reached us over https (directly or via a
    TLS-terminating proxy that says so)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"


async def login(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    if not auth.enabled:
        return _login_page(request)
    form = await request.post()
    csrf = form.get(CSRF_FIELD)
    if not same_origin(request) or not auth.sessions.login_token_ok(
        csrf if isinstance(csrf, str) else None
    ):
        return _login_page(request, 403, "The login form expired or did not come from this page.")
    presented = form.get("token")
    try:
        operator = await auth.check_token(
            request, presented if isinstance(presented, str) else "", "login form"
        )
    except TooManyAttempts as exc:
        response = _login_page(
            request, 429, f"Too many failed logins; try again in {exc.retry_after:.0f} s."
        )
        response.headers["Retry-After"] = str(int(exc.retry_after) + 1)
        return response
    except Unauthorized:
        return _login_page(request, 401, "Wrong admin token.")
    cookie, session = auth.sessions.issue(operator)
    log.info("admin login of %s from %s", operator, request.remote)
    response = _redirect("/")
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=session.expires - int(time.time()),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )
    return response


async def logout(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    session = await auth.session(request)
    if session is not None:
        form = await request.post()
        csrf = form.get(CSRF_FIELD)
        if not same_origin(request) or not auth.sessions.csrf_ok(
            session, csrf if isinstance(csrf, str) else None
        ):
            return web.Response(
                status=403,
                text="CSRF token missing or wrong: reload the admin page and log out again.",
            )
        await auth.end(session)
        log.info("admin logout of %s from %s", session.operator, request.remote)
    response = _redirect(f"{LOGIN_PATH}?out=1")
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=_secure(request))
    return response


async def index(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    auth = request.app[AUTH]
    session = await auth.session(request)
    if session is None:
        return _redirect(LOGIN_PATH)
    context = {
        "doc": await live_document(request.app),
        "csrf": auth.sessions.csrf_token(session),
        "prefix": runtime.config.router.key_prefix,
        "operator": session.operator,
    }
    return request.app[TEMPLATES].render("admin.html", context)


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(
        body=orjson.dumps(request.app[OPENAPI]),
        content_type="application/json",
        headers={"Cache-Control": "no-cache"},
    )


async def api_docs(request: web.Request) -> web.Response:
    return request.app[TEMPLATES].render("docs.html", {"doc": request.app[OPENAPI]})


OPERATIONS = (
    Operation(
        "GET",
        "/api/openapi.json",
        openapi_json,
        summary="This document",
        tag="meta",
        access=Access.READ,
        ok=Content("application/json", {"type": "object"}),
        ok_description="OpenAPI 3.1.",
    ),
    Operation(
        "GET",
        "/api/docs",
        api_docs,
        summary="This document as a page for people",
        tag="meta",
        access=Access.READ,
        ok=Content("text/html", {"type": "string"}),
        ok_description="HTML.",
    ),
)

# The operator's page: HTML and form posts for a browser, not part of the JSON API (and so
# not in the OpenAPI document). tests/admin/test_openapi.py holds every other route to an
# Operation.
PAGE_ROUTES = frozenset(
    {("GET", "/"), ("GET", LOGIN_PATH), ("POST", LOGIN_PATH), ("POST", "/logout")}
)
STATIC_PREFIX = "/static"


def add_routes(app: web.Application, assets: Assets) -> None:
    setup_templates(app, assets)
    app.router.add_get("/", index)
    app.router.add_get(LOGIN_PATH, login_form)
    app.router.add_post(LOGIN_PATH, login)
    app.router.add_post("/logout", logout)
