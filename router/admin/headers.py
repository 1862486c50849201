"""Security headers on every answer of the admin listener.

The page runs no inline script or style (static/admin.js and admin.css only), so the
Content-Security-Policy can forbid both; it may not be framed (clickjacking a switch button);
nothing it answers is cached, except static assets, which are revalidated. The referrer
policy is same-origin, not no-referrer: under no-referrer a browser sends `Origin: null` even
on the page's own POSTs, and the Origin check (auth.same_origin) needs the real one.
"""

from __future__ import annotations

from aiohttp import web

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: covers handlers, static files, errors and event streams alike."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/static/"):
        # Revalidate (aiohttp answers 304 from Last-Modified): a new release's page never
        # runs an old script, and the files are small.
        response.headers["Cache-Control"] = "no-cache"
    else:
        response.headers.setdefault("Cache-Control", "no-store")
