"""Is each system's gateway answering, and how many sessions does it hold? One prober.

What is probed: the system's `stats_url` when configured (it also yields the gateway's own
count of open sessions and short codes), else a HEAD of `/gateway/adapter.js`, a library
file every Web Gateway serves. Never a token mint, which would open a session on the gateway.

One `GatewayProber` per process (one aiohttp session, each system's TLS policy) answers every
caller from the same probes, in the same words:
- the page and its live feed: the latest `Health` per system, listeners on a change; probes
  run in the background only while someone looks (`demand`, `/api/live`) and for
  `idle_after` seconds after, so a fleet with nobody watching sends gateways nothing, and a
  test that injects a gateway failure gets its failure, not a loop that consumed it;
- the gates of a switch (switching/gates.py): `fresh`, a recent answer or a probe now, one
  probe at a time per system, so concurrent switches probe once;
- drain, `status` and the upgrade: `gateway_counts`, never older than they ask.

Health is for the operator's eyes and the gates: it never routes, switches or marks anything
offline on its own (SPEC: no automatic switch unless configured). A one-shot command uses it
as an async context manager, which closes the session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

from router.config import SystemConfig
from router.systems.stats import stats_document, system_count
from router.systems.tls import gateway_ssl

log = logging.getLogger("router.health")

LIBRARY_PROBE_PATH = "/gateway/adapter.js"


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe of a system's gateway: did it answer, when, why not, and what it counted."""

    ok: bool
    at: float  # time.time() when the answer (or the failure) came
    error: str = ""  # why not ok, in the words every surface shows
    status: int | None = None
    latency_ms: float | None = None
    sessions: int | None = None  # the gateway's own open-session count (stats_url)
    count_error: str = ""  # why `sessions` is None although the probe answered
    codes: int | None = None  # the gateway's short codes (stats_url)

    def gateway_count(self) -> tuple[int | None, str]:
        """(count, "") or (None, why not), as drain reads it."""
        if self.ok and self.sessions is not None:
            return self.sessions, ""
        if self.ok:
            return None, self.count_error or "stats_url answer has no count"
        return None, self.error


@dataclass
class Health:
    """What the page shows of one system: the last probe, and the last error after it
    recovered. `ok` is None until the first probe finished."""

    target: str
    ok: bool | None = None
    status: int | None = None
    checked_at: float | None = None
    latency_ms: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    last_ok_at: float | None = None
    gateway_sessions: int | None = None
    gateway_codes: int | None = None

    def record(self, probe: Probe) -> None:
        self.ok = probe.ok
        self.status = probe.status
        self.checked_at = probe.at
        self.latency_ms = probe.latency_ms
        self.gateway_sessions, self.gateway_codes = probe.sessions, probe.codes
        if probe.ok:
            self.last_ok_at = probe.at
        else:
            self.last_error, self.last_error_at = probe.error, probe.at

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


class GatewayProber:
    """Probes the configured systems' gateways, one session, one probe at a time per system."""

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
        self.last: dict[str, Probe] = {}
        self._ssl = {sid: gateway_ssl(s) for sid, s in systems.items()}
        self._locks = {sid: asyncio.Lock() for sid in systems}
        self._demand_until = 0.0
        self._wanted = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the views ---------------------------------------------------------------------

    def demand(self) -> None:
        """Someone is looking: keep probing for `idle_after` seconds more."""
        first = time.monotonic() > self._demand_until
        self._demand_until = time.monotonic() + self.idle_after
        if first:
            self._wanted.set()

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {sid: h.to_json() for sid, h in self.health.items()}

    async def fresh(self, system: str, max_age: float) -> Probe:
        """For the gates: an answer no older than `max_age` seconds, the last one if it
        answered, else a probe now (a failure is never reused: a gateway just fixed passes)."""
        last = self.last.get(system)
        if last is not None and last.ok and time.time() - last.at <= max_age:
            return last
        return await self._probe_once(system, min(max_age, 0.05))

    async def gateway_counts(self, max_age: float = 1.0) -> dict[str, tuple[int | None, str]]:
        """The gateways' own open-session counts, for systems with a stats_url: (count, "")
        or (None, why not). A result older than `max_age` seconds is probed again first, so
        drain is never decided on a stale count."""
        wanted = [sid for sid, s in self.systems.items() if s.stats_url]
        found = await asyncio.gather(*(self.gateway_count(sid, max_age) for sid in wanted))
        return dict(zip(wanted, found, strict=True))

    async def gateway_count(self, system: str, max_age: float) -> tuple[int | None, str]:
        """One system's count as `gateway_counts` reads it; (None, "") without a stats_url."""
        if not self.systems[system].stats_url:
            return None, ""
        return (await self._probe_once(system, max_age)).gateway_count()

    async def probe(self, system: str) -> Probe:
        """Probe `system` now: one request, made after any probe of it already under way."""
        return await self._probe_once(system, 0.0)

    async def probe_all(self) -> dict[str, Probe]:
        """Every system probed now, concurrently."""
        found = await asyncio.gather(*(self.probe(sid) for sid in self.systems))
        return dict(zip(self.systems, found, strict=True))

    async def run(self) -> None:
        """The background loop (cleanup_ctx): idle until demand, then probe every interval.
        The session stays open: its owner closes the prober."""
        while True:
            if time.monotonic() > self._demand_until:
                self._wanted.clear()
                await self._wanted.wait()
            await self.probe_all()
            await asyncio.sleep(self.interval)

    # --- the one probe -----------------------------------------------------------------

    async def _probe_once(self, system: str, reuse: float) -> Probe:
        """A probe no older than `reuse` seconds, else one now; one at a time per system, so
        a caller that waited for another's probe takes its answer."""
        last = self.last.get(system)
        if last is not None and time.time() - last.at <= reuse:
            return last
        async with self._locks[system]:
            last = self.last.get(system)
            if last is not None and time.time() - last.at <= reuse:
                return last  # somebody probed while we waited
            probe = await self._request(system)
            self._record(system, probe)
            return probe

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                # A probe is one request every few seconds: no pool worth keeping alive.
                connector=aiohttp.TCPConnector(force_close=True),
            )
        return self._session

    async def _request(self, sid: str) -> Probe:
        system = self.systems[sid]
        method, url = probe_target(system)
        started = time.monotonic()
        try:
            async with self._client().request(
                method, url, ssl=self._ssl[sid], allow_redirects=False
            ) as resp:
                body = await resp.read() if method == "GET" else b""
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            error = describe_failure(exc, self.timeout)
            return Probe(False, time.time(), error, latency_ms=_since(started))
        latency = _since(started)
        if not 200 <= status < 300:
            error = f"{method} {url} answered {status}"
            return Probe(False, time.time(), error, status, latency)
        if method != "GET":
            return Probe(True, time.time(), status=status, latency_ms=latency)
        count, why = system_count(system, body)
        return Probe(True, time.time(), "", status, latency, count, why, _short_codes(body))

    def _record(self, sid: str, probe: Probe) -> None:
        self.last[sid] = probe
        health = self.health[sid]
        was_ok = health.ok
        health.record(probe)
        if probe.ok == was_ok:
            return
        if not probe.ok:
            log.warning("system %s looks unhealthy: %s", sid, probe.error)
        elif was_ok is False:
            log.info("system %s answers again", sid)
        for listener in self.listeners:
            listener()


def _since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
