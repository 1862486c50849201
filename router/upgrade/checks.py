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
from router.systems.prober import LIBRARY_PROBE_PATH, Probe, describe_failure, probe_target
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


def gateway_health(system: SystemConfig, probe: Probe) -> Check:
    """The prober's own probe (stats_url, else a library HEAD), answered now: the answer the
    switch gate takes when it is recent enough."""
    method, url = probe_target(system)
    if probe.ok:
        ms = probe.latency_ms or 0.0
        return Check(
            "gateway healthy", True, f"{method} {url} answered {probe.status} in {ms:.0f} ms"
        )
    if probe.status is None:
        return Check("gateway healthy", False, f"{method} {url}: {probe.error}")
    return Check("gateway healthy", False, probe.error)


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


# How long the smoke test waits for the router to hand out the release the preflight stored
# (every router re-reads the store each resync_interval, 0.5 s by default).
ADOPT_BOUND = 10.0
SMOKE_WEBAPP = "token-router-upgrade-smoke"


def _answer(status: int, raw: bytes) -> str:
    text = raw[:200].decode(errors="replace").strip()
    return f"{status}" + (f": {text}" if text else "")


def public_scheme(system: SystemConfig) -> dict[str, object]:
    """The urlSchemeDetails a token of `system` must carry (its public_url), port as a string."""
    return {
        "secure": system.public_secure,
        "host": system.public_host,
        "port": str(system.public_port),
    }


def scheme_of(details: object) -> dict[str, object] | None:
    """urlSchemeDetails reduced to what the check compares, port as a string; None if absent."""
    if not isinstance(details, dict):
        return None
    got = {k: details.get(k) for k in ("secure", "host", "port")}
    if isinstance(got["port"], int) and not isinstance(got["port"], bool):
        got["port"] = str(got["port"])
    return got


async def _current(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str], release: str
) -> tuple[dict[str, Any] | None, str]:
    """/router/current through the preview credential: (document, error). With `release`
    known, waits up to ADOPT_BOUND for the router to name it."""
    deadline = time.monotonic() + ADOPT_BOUND
    while True:
        try:
            async with session.get(base + "/router/current", headers=headers) as resp:
                raw, status = await resp.read(), resp.status
            doc = orjson.loads(raw) if status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
            return None, f"GET {base}/router/current: {describe_failure(exc, TIMEOUT)}"
        if not isinstance(doc, dict):
            return None, f"GET {base}/router/current answered {_answer(status, raw)}"
        if not release or doc.get("release") == release or time.monotonic() >= deadline:
            return doc, ""
        await asyncio.sleep(0.1)


def _release_check(doc: dict[str, Any], target: str, release: str) -> Check:
    handed = doc.get("release")
    if release and handed == release:
        return Check("release handed out", True, f"the router hands out {release} for {target}")
    if not release:
        return Check(
            "release handed out",
            False,
            f"no release of {target} is known: run `token-router releases refresh {target}` "
            "and look at its error (router.release_paths set? the gateway serving them?)",
        )
    return Check(
        "release handed out",
        False,
        f"the router hands out {handed or 'no release'} for {target}, but {target} serves "
        f"{release} (fingerprinted now), still after {ADOPT_BOUND:g} s: check that the "
        "routers use the same Redis as this command (router.redis_url) and see "
        "`token-router releases`",
    )


def _scheme_check(doc: dict[str, Any], echoed: object, system: SystemConfig, router: str) -> Check:
    """The session description the router sends carries the target's public scheme: its dry
    rewrite (/router/current), and the gateway's echo where the gateway echoes one."""
    want = public_scheme(system)
    sent = scheme_of(doc.get("url_scheme_details"))
    if sent is None:
        return Check(
            "urlSchemeDetails",
            False,
            f"the router at {router} does not show the urlSchemeDetails it sends "
            "(/router/current has no url_scheme_details): upgrade the routers to this version",
        )
    if sent != want:
        return Check(
            "urlSchemeDetails",
            False,
            f"the router sends {sent} to {system.id}, want {want} (systems.{system.id}."
            "public_url): the routers run another configuration than this command; "
            "make them the same and restart the routers",
        )
    echo = scheme_of(echoed)
    if echoed is not None and echo != want:
        return Check(
            "urlSchemeDetails",
            False,
            f"the router sends {want}, but {system.id}'s gateway answered {echoed}: "
            "something between the router and the gateway changes the session description",
        )
    how = "sent and echoed by the gateway" if echo is not None else "sent (dry rewrite)"
    return Check("urlSchemeDetails", True, f"names {system.public_url}, {how}")


async def smoke_test(config: Config, target: str, router: str, release: str) -> SmokeResult:
    """Step 2: what the isolated web app of the seed procedure did, through the router, and
    only what a real gateway shows (FCSDK-API.md): a token minted on the target and answered
    by it, the session description the router sends (its dry rewrite; compared with the
    gateway's echo where it echoes one), the token released (any 2xx), the target's
    libraries under its /v/ path byte for byte. `release` is the one the preflight
    fingerprinted. Each failure says what to do next."""
    r = config.router
    system = config.systems[target]
    checks: list[Check] = []
    if r.preview_secret is None:
        check = Check(
            "preview token",
            False,
            "router.preview_secret is not set: the smoke test reaches the idle system only "
            "through the preview credential; set it on every router and here",
        )
        return SmokeResult((check,))
    headers = {r.preview_header: f"{target}:{r.preview_secret.reveal()}"}
    base = router.rstrip("/")
    body = {
        "webAppId": SMOKE_WEBAPP,
        "urlSchemeDetails": {"secure": False, "host": "smoke.invalid", "port": "1"},
    }
    async with aiohttp.ClientSession(timeout=_timeout()) as session:
        try:
            async with session.post(base + SESSION_PATH, json=body, headers=headers) as resp:
                raw = await resp.read()
                status, served_by = resp.status, resp.headers.get(SYSTEM_HEADER, "")
            doc = orjson.loads(raw) if status == 200 else {}
        except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
            checks.append(
                Check(
                    "preview token",
                    False,
                    f"POST {base}{SESSION_PATH}: {describe_failure(exc, TIMEOUT)}: is the "
                    "router running and is --router its proxy URL?",
                )
            )
            return SmokeResult(tuple(checks))
        sid = str(doc.get("sessionid", "")) if isinstance(doc, dict) else ""
        if status != 200 or served_by != target or not sid:
            checks.append(
                Check("preview token", False, _token_failure(status, served_by, raw, target))
            )
            return SmokeResult(tuple(checks))
        checks.append(Check("preview token", True, f"minted {sid} on {target}"))
        current, error = await _current(session, base, headers, release)
        if current is None:
            checks.append(Check("urlSchemeDetails", False, error))
        else:
            checks.append(_scheme_check(current, doc.get("urlSchemeDetails"), system, base))
            checks.append(_release_check(current, target, release))
        checks.append(await _release_token(session, base, sid, target))
        checks.append(await _library_check(session, system, base, release))
    return SmokeResult(tuple(checks))


def _token_failure(status: int, served_by: str, raw: bytes, target: str) -> str:
    what = f"POST {SESSION_PATH} answered {_answer(status, raw)} from {served_by or '?'}"
    if served_by and served_by != target:
        return (
            f"{what}, not from {target}: the router did not take the preview credential; "
            "give every router and this command the same router.preview_secret"
        )
    if status == 503:
        return f"{what}: {target} is offline or unreachable; `token-router online {target}`?"
    if status >= 500 or status == 0:
        return f"{what}: {target}'s gateway failed the token request; look at its logs"
    if status == 200:
        return f'{what}: the answer has no sessionid (FCSDK-API.md: {{"sessionid": ...}})'
    return f"{what}: {target}'s gateway refused the session description; look at its logs"


async def _release_token(session: aiohttp.ClientSession, base: str, sid: str, target: str) -> Check:
    """DELETE of the smoke token: any 2xx from the target (FCSDK-API.md documents 204)."""
    try:
        async with session.delete(f"{base}{SESSION_PATH}/id/{sid}") as resp:
            raw = await resp.read()
            status, served_by = resp.status, resp.headers.get(SYSTEM_HEADER, "")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return Check("token released", False, f"DELETE failed: {describe_failure(exc, TIMEOUT)}")
    detail = f"DELETE answered {_answer(status, raw)} from {served_by or '?'}"
    if served_by != target:
        return Check(
            "token released",
            False,
            f"{detail}, not from {target}: the router lost track of the token it issued; "
            "see `token-router status` (is Redis shared by every router?)",
        )
    if not 200 <= status <= 299:
        return Check(
            "token released",
            False,
            f"{detail}: {target}'s gateway did not release {sid}; check its DELETE path "
            "(FCSDK-API.md marks it assumed) and its logs",
        )
    return Check("token released", True, f"DELETE answered {status} from {target}")


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
        return Check(
            "library /v/ path",
            False,
            f"GET {url} answered {status}: the release store lacks it; "
            f"`token-router releases refresh {system.id}`, then run the upgrade again",
        )
    if served != direct:
        return Check(
            "library /v/ path",
            False,
            f"GET {url}: {len(served)} bytes differ from the {len(direct)} {system.id}'s "
            f"gateway serves now: it changed since release {release} was fingerprinted; "
            f"`token-router releases refresh {system.id}`, then run the upgrade again",
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
