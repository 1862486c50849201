"""The operator's page: login, logout, the cockpit itself, and the API's human docs view.

Rendered with aiohttp-jinja2 from `templates/`, styled and scripted from `static/` (no CDN,
no build step). The page reads the same live document as `/api/live`; its actions call the
JSON API with the login session's CSRF token, so the page can do nothing the API cannot.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
import jinja2
import orjson
from aiohttp import web

from router.admin.auth import current_session, same_origin, token_matches
from router.admin.live import live_document
from router.admin.openapi import openapi_document
from router.admin.session import COOKIE, CSRF_FIELD, LoginThrottle, signer_for
from router.app_keys import RUNTIME
from router.assets import Assets

log = logging.getLogger("router.admin.page")

THROTTLE = web.AppKey("admin_login_throttle", LoginThrottle)
LOGIN_PATH = "/login"


def clock(unix: float | None) -> str:
    """Server-side time format (UTC); the page's script re-renders in the browser's zone."""
    if unix is None:
        return "—"
    return datetime.fromtimestamp(float(unix), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _asset_versions(assets: Assets) -> dict[str, str]:
    """name -> short content hash, appended to asset URLs so a new release is fetched anew."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in assets.static.iterdir()
        if path.is_file()
    }


def setup_templates(app: web.Application, assets: Assets) -> None:
    versions = _asset_versions(assets)

    def static(name: str) -> str:
        version = versions.get(name)
        return f"/static/{name}?v={version}" if version else f"/static/{name}"

    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(assets.templates)),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    env.globals["static"] = static
    env.filters["clock"] = clock
    app.router.add_static("/static", assets.static, name="static", append_version=False)


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _login_page(
    request: web.Request, status: int = 200, message: str = "", kind: str = "error"
) -> web.Response:
    token = request.app[RUNTIME].config.router.admin_token
    context: dict[str, Any] = {
        "enabled": token is not None,
        "csrf": signer_for(token).login_token() if token is not None else "",
        "message": message,
        "message_kind": kind,
    }
    if token is None:
        context["message"] = (
            "Admin login is disabled: set router.admin_token (or admin_token_file) "
            "in the router's configuration."
        )
        status = 403
    return aiohttp_jinja2.render_template("login.html", request, context, status=status)


async def login_form(request: web.Request) -> web.Response:
    token = request.app[RUNTIME].config.router.admin_token
    if current_session(request, token) is not None:
        return _redirect("/")
    if "out" in request.query:
        return _login_page(request, message="You are logged out.", kind="info")
    return _login_page(request)


def _secure(request: web.Request) -> bool:
    """Mark the cookie Secure when the browser reached us over https (directly or via a
    TLS-terminating proxy that says so)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"


async def login(request: web.Request) -> web.Response:
    token = request.app[RUNTIME].config.router.admin_token
    if token is None:
        return _login_page(request)
    signer = signer_for(token)
    form = await request.post()
    csrf = form.get(CSRF_FIELD)
    if not same_origin(request) or not signer.login_token_ok(
        csrf if isinstance(csrf, str) else None
    ):
        return _login_page(request, 403, "The login form expired or did not come from this page.")
    throttle = request.app[THROTTLE]
    address = request.remote or "unknown"
    wait = throttle.retry_after(address)
    if wait > 0:
        response = _login_page(
            request, 429, f"Too many failed logins from {address}; try again in {wait:.0f} s."
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    presented = form.get("token")
    if not isinstance(presented, str) or not token_matches(token, presented):
        throttle.failed(address)
        # Never the presented value: a mistyped token is most of the real one.
        log.warning("failed admin login from %s", address)
        return _login_page(request, 401, "Wrong admin token.")
    throttle.succeeded(address)
    cookie, session = signer.issue()
    log.info("admin login from %s", address)
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
    token = request.app[RUNTIME].config.router.admin_token
    session = current_session(request, token)
    if session is not None and token is not None:
        form = await request.post()
        csrf = form.get(CSRF_FIELD)
        if not same_origin(request) or not signer_for(token).csrf_ok(
            session, csrf if isinstance(csrf, str) else None
        ):
            return web.Response(
                status=403,
                text="CSRF token missing or wrong: reload the admin page and log out again.",
            )
        log.info("admin logout from %s", request.remote)
    response = _redirect(f"{LOGIN_PATH}?out=1")
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=_secure(request))
    return response


async def index(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    token = runtime.config.router.admin_token
    session = current_session(request, token)
    if token is None or session is None:
        return _redirect(LOGIN_PATH)
    context = {
        "doc": await live_document(request.app),
        "csrf": signer_for(token).csrf_token(session),
        "prefix": runtime.config.router.key_prefix,
    }
    return aiohttp_jinja2.render_template("admin.html", request, context)


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(
        body=orjson.dumps(openapi_document()),
        content_type="application/json",
        headers={"Cache-Control": "no-cache"},
    )


async def api_docs(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("docs.html", request, {"doc": openapi_document()})


def add_routes(app: web.Application, assets: Assets) -> None:
    setup_templates(app, assets)
    app[THROTTLE] = LoginThrottle()
    app.router.add_get("/", index)
    app.router.add_get(LOGIN_PATH, login_form)
    app.router.add_post(LOGIN_PATH, login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/api/openapi.json", openapi_json)
    app.router.add_get("/api/docs", api_docs)
