"""Is each system's gateway answering? A prober with the last result and the last error.

What is probed: the system's `stats_url` when configured (it also yields the gateway's own
count of open sessions and short codes), else a HEAD of `/gateway/adapter.js`, a library
file every Web Gateway serves. Health is for the operator's eyes: it never routes, switches
or marks anything offline (SPEC: no automatic switch unless configured).

Probes run only while someone looks (the admin page's live feed, `/api/live`), and for
`idle_after` seconds after: a router fleet with nobody watching sends gateways nothing, and
a test that injects a gateway failure gets its failure, not a prober that consumed it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from router.config import SystemConfig
from router.systems.stats import probe_open_sessions, stats_document, system_count
from router.systems.tls import gateway_ssl

log = logging.getLogger("router.health")

LIBRARY_PROBE_PATH = "/gateway/adapter.js"


@dataclass
class Health:
    """The last probe of one system. `ok` is None until the first probe finished."""

    target: str
    ok: bool | None = None
    status: int | None = None
    checked_at: float | None = None
    latency_ms: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    last_ok_at: float | None = None
    gateway_sessions: int | None = None
    gateway_count_error: str = ""  # why gateway_sessions is None although the probe answered
    gateway_codes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "target": self.target,
            "status": self.status,
            "checked_at": self.checked_at,
            "latency_ms": self.latency_ms,
            "last_error": self.last_error or None,
            "last_error_at": self.last_error_at,
            "last_ok_at": self.last_ok_at,
            "gateway_sessions": self.gateway_sessions,
            "gateway_codes": self.gateway_codes,
        }


def probe_target(system: SystemConfig) -> tuple[str, str]:
    """(method, url) the prober uses for `system`."""
    if system.stats_url:
        return "GET", system.stats_url
    return "HEAD", system.gateway.rstrip("/") + LIBRARY_PROBE_PATH


def _short_codes(body: bytes) -> int | None:
    doc = stats_document(body)
    value = None if doc is None else doc.get("short_codes")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def describe_failure(exc: BaseException, timeout: float) -> str:
    """One line an operator can act on, for the card's 'last error'."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc}"
    return f"{exc.__class__.__name__}: {exc}".rstrip(": ")


class HealthProber:
    """Probes every configured system while there is demand; keeps `Health` per system."""

    def __init__(
        self,
        systems: Mapping[str, SystemConfig],
        *,
        interval: float = 3.0,
        timeout: float = 2.0,
        idle_after: float = 30.0,
    ) -> None:
        self.systems = dict(systems)
        self.interval = interval
        self.timeout = timeout
        self.idle_after = idle_after
        # Called when a system turns healthy or unhealthy (the page's event streams).
        self.listeners: list[Callable[[], None]] = []
        self.health = {sid: Health(target=probe_target(s)[1]) for sid, s in systems.items()}
        self._ssl = {sid: gateway_ssl(s) for sid, s in systems.items()}
        self._demand_until = 0.0
        self._wanted = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    def demand(self) -> None:
        """Someone is looking: keep probing for `idle_after` seconds more."""
        first = time.monotonic() > self._demand_until
        self._demand_until = time.monotonic() + self.idle_after
        if first:
            self._wanted.set()

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {sid: h.to_json() for sid, h in self.health.items()}

    async def probe(self, sid: str) -> None:
        system = self.systems[sid]
        method, url = probe_target(system)
        health = self.health[sid]
        was_ok = health.ok
        started = time.monotonic()
        assert self._session is not None, "probe() outside run()"
        try:
            async with self._session.request(
                method, url, ssl=self._ssl[sid], allow_redirects=False
            ) as resp:
                body = await resp.read() if method == "GET" else b""
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._failed(health, None, describe_failure(exc, self.timeout))
        else:
            health.status = status
            if 200 <= status < 300:
                health.ok = True
                health.last_ok_at = time.time()
                if method == "GET":
                    count, why = system_count(system, body)
                    health.gateway_sessions, health.gateway_count_error = count, why
                    health.gateway_codes = _short_codes(body)
            else:
                self._failed(health, status, f"{method} {url} answered {status}")
        health.checked_at = time.time()
        health.latency_ms = round((time.monotonic() - started) * 1000, 1)
        if health.ok != was_ok:
            if health.ok is False:
                log.warning("system %s looks unhealthy: %s", sid, health.last_error)
            elif was_ok is False:
                log.info("system %s answers again", sid)
            for listener in self.listeners:
                listener()

    @staticmethod
    def _failed(health: Health, status: int | None, error: str) -> None:
        health.ok = False
        health.status = status
        health.last_error = error
        health.last_error_at = time.time()
        health.gateway_sessions = health.gateway_codes = None

    async def gateway_counts(self, max_age: float = 1.0) -> dict[str, tuple[int | None, str]]:
        """The gateways' own open-session counts, for systems with a stats_url: (count, "")
        or (None, why not). A result older than `max_age` seconds is probed again first, so
        drain is never decided on a stale count. Only stats_url systems are probed, and only
        now: the background loop stays idle unless the page is open."""
        now = time.time()
        wanted = [sid for sid, s in self.systems.items() if s.stats_url]
        stale = [
            sid
            for sid in wanted
            if self.health[sid].checked_at is None
            or now - (self.health[sid].checked_at or 0.0) > max_age
        ]
        if stale:
            if self._session is None:
                # Not running (a bare app in a test): one-off probes, same parsing.
                async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.timeout)
                ) as session:
                    found = await asyncio.gather(
                        *(
                            probe_open_sessions(session, self.systems[sid], self.timeout)
                            for sid in stale
                        )
                    )
                fresh = dict(zip(stale, found, strict=True))
            else:
                await asyncio.gather(*(self.probe(sid) for sid in stale))
                fresh = {}
        else:
            fresh = {}
        out: dict[str, tuple[int | None, str]] = {}
        for sid in wanted:
            if sid in fresh:
                out[sid] = fresh[sid]
                continue
            health = self.health[sid]
            if health.ok and health.gateway_sessions is not None:
                out[sid] = (health.gateway_sessions, "")
            elif health.ok:
                out[sid] = (None, health.gateway_count_error or "stats_url answer has no count")
            else:
                out[sid] = (None, health.last_error or "stats_url not probed yet")
        return out

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(sid) for sid in self.systems))

    async def run(self) -> None:
        """The background loop (cleanup_ctx): idle until demand, then probe every interval."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            # A probe is one request every few seconds: no pool worth keeping alive.
            connector=aiohttp.TCPConnector(force_close=True),
        )
        try:
            while True:
                if time.monotonic() > self._demand_until:
                    self._wanted.clear()
                    await self._wanted.wait()
                await self.probe_all()
                await asyncio.sleep(self.interval)
        finally:
            await self._session.close()
