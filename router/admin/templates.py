"""The operator page's templates (aiohttp-jinja2), loaded at the first page rendered.

jinja2 and aiohttp-jinja2 cost every worker ~2 MB of imports, and only an operator who opens
the page needs them: a worker that only proxies and answers the JSON API never loads them
(SPEC section 3: peak RSS <= 80 MB per worker; docs/benchmark.md). aiohttp-jinja2 keeps its
environment under an app key, which cannot be set once the admin app runs, so the
environment is set up on a private application and kept here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.admin.assets import Assets

if TYPE_CHECKING:
    import jinja2


def clock(unix: float | None) -> str:
    """Server-side time format (UTC); the page's script re-renders in the browser's zone."""
    if unix is None:
        return "—"
    return datetime.fromtimestamp(float(unix), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def asset_versions(assets: Assets) -> dict[str, str]:
    """name -> short content hash, appended to asset URLs so a new release is fetched anew."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in assets.static.iterdir()
        if path.is_file()
    }


class Templates:
    def __init__(self, assets: Assets) -> None:
        self.assets = assets
        versions = asset_versions(assets)

        def static(name: str) -> str:
            version = versions.get(name)
            return f"/static/{name}?v={version}" if version else f"/static/{name}"

        self.static: Callable[[str], str] = static
        self._env: jinja2.Environment | None = None

    @property
    def loaded(self) -> bool:
        """Whether jinja2 was loaded (a page was rendered) in this process."""
        return self._env is not None

    def environment(self) -> jinja2.Environment:
        if self._env is None:
            import aiohttp_jinja2
            import jinja2

            env = aiohttp_jinja2.setup(
                web.Application(),
                loader=jinja2.FileSystemLoader(str(self.assets.templates)),
                autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
                undefined=jinja2.StrictUndefined,
            )
            env.globals["static"] = self.static
            env.filters["clock"] = clock
            self._env = env
        return self._env

    def render(self, name: str, context: Mapping[str, Any], status: int = 200) -> web.Response:
        text = self.environment().get_template(name).render(context)
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
