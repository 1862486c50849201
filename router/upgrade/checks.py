"""The checks of steps 1-2 of an upgrade: each a small I/O function returning a `Check`.

None of them changes the routing state. Two write harmless things a real run needs: the
release check stores the target's release when it is new (what `releases refresh` does),
and the smoke test mints one token through the preview credential and releases it again.
The dry run skips the release store write.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from router.config import Config, SystemConfig, check_listen
from router.releases.store import open_release_store
from router.state.keys import Keys
from router.systems.prober import LIBRARY_PROBE_PATH, describe_failure, probe_target
from router.systems.tls import gateway_ssl

TIMEOUT = 5.0
SESSION_PATH = "/gateway/sessions/session"
RELEASE_HEADER = "X-Token-Router-Release"
SYSTEM_HEADER = "X-Token-Router-System"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # passed, but the operator should read the detail

    def line(self) -> str:
        mark = "ok  " if self.ok and not self.warning else "warn" if self.ok else "FAIL"
        return f"[{mark}] {self.name}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "warning": self.warning, "detail": self.detail}


def default_router_url(config: Config) -> str:
    """The proxy listener as seen from this host (0.0.0.0 / :: mean "this machine")."""
    host, port = check_listen("router.listen", config.router.listen)
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    scheme = "https" if config.router.tls_cert else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _timeout() -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=TIMEOUT)


async def gateway_health(system: SystemConfig) -> Check:
    """The prober's own probe (stats_url, else a library HEAD), answered now."""
    method, url = probe_target(system)
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=_timeout()) as session,
            session.request(method, url, ssl=gateway_ssl(system), allow_redirects=False) as resp,
        ):
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return Check("gateway healthy", False, f"{method} {url}: {describe_failure(exc, TIMEOUT)}")
    ms = (time.monotonic() - started) * 1000
    if not 200 <= status < 300:
        return Check("gateway healthy", False, f"{method} {url} answered {status}")
    return Check("gateway healthy", True, f"{method} {url} answered {status} in {ms:.0f} ms")


async def public_url_reachable(system: SystemConfig) -> Check:
    """Browsers open their WebSockets at public_url, a path the router never sees: with
    https, a full TLS handshake (certificate verified); with http, a TCP connection."""
    parts = urlsplit(system.public_url)
    host, port = parts.hostname or "", system.public_port
    secure = parts.scheme == "https"
    context: ssl.SSLContext | None = None
    if secure:
        context = ssl.create_default_context()
        if system.ca_file:
            context.load_verify_locations(cafile=system.ca_file)
    started = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=context, server_hostname=host if secure else None
            ),
            TIMEOUT,
        )
    except (TimeoutError, OSError, ssl.SSLError, socket.gaierror) as exc:
        what = "TLS handshake with" if secure else "TCP connection to"
        reason = f"no answer within {TIMEOUT:g} s" if isinstance(exc, TimeoutError) else str(exc)
        return Check("public_url reachable", False, f"{what} {host}:{port} failed: {reason}")
    ms = (time.monotonic() - started) * 1000
    detail = f"TCP connection to {host}:{port} in {ms:.0f} ms"
    if secure:
        ssl_object = writer.get_extra_info("ssl_object")
        version = ssl_object.version() if ssl_object is not None else "TLS"
        detail = f"{version} handshake with {host}:{port} (certificate verified) in {ms:.0f} ms"
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return Check("public_url reachable", True, detail)


async def release_stored(config: Config, target: str, *, store_new: bool) -> tuple[Check, str]:
    """The target's client libraries fingerprinted and stored as a release: (check, id).

    A real run fingerprints the target now (as `releases refresh` does: a new release is
    stored) and then reads it back from the store; the dry run only reads.
    """
    from router.releases.service import refresh_once

    r = config.router
    if store_new:
        results = await refresh_once(config, [target])
        result = results[0] if results else None
        if result is None or result.error or not result.release:
            why = result.error if result is not None else "no answer"
            return Check("release stored", False, f"fingerprinting {target} failed: {why}"), ""
    store = open_release_store(r.redis_url, Keys(r.key_prefix), timeout=r.redis_timeout)
    try:
        release = (await store.system_releases([target])).get(target)
        meta = None if release is None else await store.meta(release)
    finally:
        await store.close()
    if release is None or meta is None:
        if store_new:
            return Check("release stored", False, f"{target}'s release is not in the store"), ""
        return (
            Check(
                "release stored",
                True,
                f"{target}'s libraries are not fingerprinted yet: the upgrade stores them",
                warning=True,
            ),
            "",
        )
    label = f" ({meta.label})" if meta.label else ""
    return (
        Check("release stored", True, f"release {release}{label}, {len(meta.files)} files"),
        release,
    )


async def routers_agree(routers: Sequence[str], active: str) -> Check:
    """Every router named answers /router/current naming the active system in Redis."""
    if not routers:
        return Check("routers agree", False, "no router to ask (give --router URL)")
    wrong: list[str] = []
    async with aiohttp.ClientSession(timeout=_timeout()) as session:
        for url in routers:
            try:
                async with session.get(url.rstrip("/") + "/router/current") as resp:
                    doc = orjson.loads(await resp.read()) if resp.status == 200 else None
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
                wrong.append(f"{url}: {describe_failure(exc, TIMEOUT)}")
                continue
            seen = doc.get("system") if isinstance(doc, dict) else None
            if seen != active:
                wrong.append(f"{url}: answered {status} routing to {seen!r}")
    if wrong:
        return Check("routers agree", False, f"not routing to {active}: " + "; ".join(wrong))
    return Check("routers agree", True, f"{len(routers)} router(s) route new sessions to {active}")


@dataclass(frozen=True, slots=True)
class SmokeResult:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


async def smoke_test(config: Config, target: str, router: str, release: str) -> SmokeResult:
    """Step 2: what the isolated web app of the seed procedure did, through the router."""
    r = config.router
    system = config.systems[target]
    checks: list[Check] = []
    if r.preview_secret is None:
        check = Check(
            "preview token",
            False,
            "router.preview_secret is not set: the smoke test reaches the idle system only "
            "through the preview credential",
        )
        return SmokeResult((check,))
    headers = {r.preview_header: f"{target}:{r.preview_secret.reveal()}"}
    base = router.rstrip("/")
    body = {
        "webAppId": "token-router-upgrade-smoke",
        "urlSchemeDetails": {"secure": False, "host": "smoke.invalid", "port": "1"},
    }
    async with aiohttp.ClientSession(timeout=_timeout()) as session:
        sid = ""
        try:
            async with session.post(base + SESSION_PATH, json=body, headers=headers) as resp:
                raw = await resp.read()
                status, served_by = resp.status, resp.headers.get(SYSTEM_HEADER, "")
                release = resp.headers.get(RELEASE_HEADER, "") or release
            doc = orjson.loads(raw) if status == 200 else {}
        except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
            checks.append(Check("preview token", False, describe_failure(exc, TIMEOUT)))
            return SmokeResult(tuple(checks))
        sid = str(doc.get("sessionid", "")) if isinstance(doc, dict) else ""
        if status != 200 or served_by != target or not sid:
            checks.append(
                Check(
                    "preview token",
                    False,
                    f"POST {SESSION_PATH} answered {status} from {served_by or '?'} "
                    f"(want 200 from {target}): {raw[:200].decode(errors='replace')}",
                )
            )
            return SmokeResult(tuple(checks))
        checks.append(Check("preview token", True, f"minted {sid} on {target}"))
        scheme = doc.get("urlSchemeDetails") if isinstance(doc, dict) else None
        want: dict[str, object] = {
            "secure": system.public_secure,
            "host": system.public_host,
            "port": str(system.public_port),
        }
        got: dict[str, object] = {"missing": True}
        if isinstance(scheme, dict):
            got = {k: scheme.get(k) for k in want}
        if isinstance(got.get("port"), int):
            got["port"] = str(got["port"])
        checks.append(
            Check(
                "urlSchemeDetails",
                got == want,
                f"names {system.public_url}" if got == want else f"{got} (want {want})",
            )
        )
        try:
            async with session.delete(f"{base}{SESSION_PATH}/id/{sid}") as resp:
                await resp.read()
                status, served_by = resp.status, resp.headers.get(SYSTEM_HEADER, "")
            ok = status == 200 and served_by == target
            detail = f"DELETE answered {status} from {served_by or '?'}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            ok, detail = False, f"DELETE failed: {describe_failure(exc, TIMEOUT)}"
        checks.append(Check("token released", ok, detail))
        checks.append(await _library_check(session, system, base, release))
    return SmokeResult(tuple(checks))


async def _library_check(
    session: aiohttp.ClientSession, system: SystemConfig, base: str, release: str
) -> Check:
    """The target's library through its /v/ path: the same bytes its gateway serves."""
    if not release:
        return Check("library /v/ path", False, f"the router names no release for {system.id}")
    path = LIBRARY_PROBE_PATH
    url = f"{base}/v/{release}{path}"
    try:
        async with session.get(url) as resp:
            served = await resp.read()
            status = resp.status
        async with session.get(system.gateway.rstrip("/") + path, ssl=gateway_ssl(system)) as resp:
            direct = await resp.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return Check("library /v/ path", False, f"GET {url}: {describe_failure(exc, TIMEOUT)}")
    if status != 200:
        return Check("library /v/ path", False, f"GET {url} answered {status}")
    if served != direct:
        return Check(
            "library /v/ path",
            False,
            f"GET {url}: {len(served)} bytes differ from what {system.id}'s gateway serves",
        )
    return Check("library /v/ path", True, f"/v/{release}{path}: {len(served)} bytes, identical")


async def release_via_router(
    config: Config, target: str, routers: Sequence[str]
) -> tuple[Check, str]:
    """With memory:// (the drill without redis-server) each router keeps its releases: ask
    the router which release it hands out for the target (through the preview credential)."""
    r = config.router
    if not routers or r.preview_secret is None:
        return Check("release stored", False, "no router or preview credential to ask"), ""
    headers = {r.preview_header: f"{target}:{r.preview_secret.reveal()}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=_timeout()) as session,
            session.get(routers[0].rstrip("/") + "/router/current", headers=headers) as resp,
        ):
            doc = orjson.loads(await resp.read())
    except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
        return Check("release stored", False, describe_failure(exc, TIMEOUT)), ""
    release = doc.get("release") if isinstance(doc, dict) else None
    if not isinstance(release, str) or not release or doc.get("system") != target:
        return Check("release stored", False, f"the router names no release for {target}"), ""
    return Check("release stored", True, f"release {release} handed out by the router"), release
