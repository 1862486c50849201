"""The proxy listener's request handling: classify, gather facts, decide, forward.

One catch-all handler, not aiohttp's dispatcher: `routing.classify` knows the route table,
and one try/except renders every RequestError as JSON without a middleware on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web
from multidict import CIMultiDict

from router.config import Config
from router.errors import (
    BodyTooLarge,
    Forbidden,
    RequestError,
    RequestTimeout,
    ShortCodeCollision,
    UpstreamTimeout,
)
from router.logs import loggable_path, request_id
from router.proxy.documents import (
    PublicEndpoint,
    json_field,
    parse_json_object,
    rewrite_session_description,
)
from router.proxy.http1 import AnswerBudget
from router.proxy.preview import COOKIE_ROUTES, Preview
from router.proxy.routing import (
    BROWSER,
    IDEMPOTENT,
    MINT,
    NOT_MINE,
    OWNED,
    Forward,
    Match,
    RequestFacts,
    Route,
    agent_names,
    allowed_methods,
    check_origin_form,
    classify,
    decide,
    fallbacks,
    upstream_target,
)
from router.proxy.upstream import Upstream, request_headers
from router.responses import (
    JSON_TYPE,
    SEPARATE_BODY_FROM,
    SYSTEM_HEADER,
    body_response,
    error_response,
)
from router.state.affinity import Affinity
from router.state.snapshot import StateHolder
from router.state.store import AffinityKind, StateStore
from router.trust import TrustedNetworks

log = logging.getLogger("router.proxy")

RELEASE_HEADER = "X-Token-Router-Release"
PREFER_HEADER = "X-Token-Router-Prefer"
REQUEST_ID_HEADER = "X-Request-Id"
LIBRARY_CACHE = "public, max-age=60"
# Short codes a system is asked for, at most, when the ones it answers are codes the router
# still routes to another system (7 digits drawn by each system on its own: they meet).
# Each try is a collision with a live code; five in a row mean the code space is nearly
# full, which an operator must hear about rather than a client wait for.
CODE_TRIES = 5


# The request counter (metrics.Metrics.observe): route, system, status, upstream seconds.
Observe = Callable[[str, str, int, float | None], None]
# GET/HEAD /v/{release}{path} (releases.serving.ReleaseFiles.respond).
ServeRelease = Callable[[web.BaseRequest, str, str], Awaitable[web.Response]]


class ProxyHandler:
    """The proxy listener's handler. It takes the parts it uses, not the process's Runtime:
    the shared state, the store and affinity, the pools, the answer budget, and the release
    service's three calls (server/wiring.py hands them over)."""

    def __init__(
        self,
        config: Config,
        *,
        holder: StateHolder,
        store: StateStore,
        affinity: Affinity,
        upstreams: Mapping[str, Upstream],
        budget: AnswerBudget,
        observe: Observe,
        release_of: Callable[[str], str | None],
        label_of: Callable[[str], str | None],
        serve_release: ServeRelease,
    ) -> None:
        self.config = config
        self.holder = holder
        self.store = store
        self.affinity = affinity
        self.upstreams = upstreams  # filled by Runtime.start, read per request
        self.budget = budget
        self.observe = observe
        self.label_of = label_of
        self.serve_release = serve_release
        r = self.config.router
        self.known = frozenset(self.config.systems)
        self.public = {sid: PublicEndpoint.of(s) for sid, s in self.config.systems.items()}
        self.max_body = r.max_body_size
        self.prefer_policy = r.prefer_policy
        self.drop = frozenset({r.preview_header.lower()})
        self.preview = Preview(config, store)
        self.cors_origins = frozenset(r.cors_origins)
        self.total_timeout = r.total_timeout
        # Token mint is back-end only (SPEC section 2). A short-code create is a browser route
        # as soon as CORS is configured for it (Live Assist's consumer page calls it), and
        # browser routes stay open.
        self.trusted = TrustedNetworks(r.trusted_networks)
        self.mint = MINT - BROWSER if self.cors_origins else MINT
        # id(request) -> bytes of router.answer_budget its gateway answers hold, given back
        # once its answer is written (__call__).
        self._held: dict[int, int] = {}
        # Seam for the release store: system id -> release id handed out with tokens.
        self.release_of = release_of

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            response = await self._handle(request)
            if self._held.get(id(request), 0) >= SEPARATE_BODY_FROM:
                # A large answer holds its budget until it is written, not only built: write
                # it here (aiohttp's own prepare and write_eof then find it sent).
                await response.prepare(request)
                await response.write_eof()
            return response
        finally:
            held = self._held.pop(id(request), 0)
            if held:
                self.budget.give_back(held)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        route: Route | None = None  # for the CORS headers: None when it was refused unclassified
        try:
            check_origin_form(request.raw_path)
            # The query string is parsed only when there is one (the token route has none).
            appkey = request.query.get("appkey") if request.query_string else None
            match = classify(request.method, request.path, appkey)
            route = match.route
            if match.route in self.mint and request.remote not in self.trusted:
                raise Forbidden(
                    f"{request.method} {request.path} is for the web application's back end"
                    f" only: {request.remote} is not in router.trusted_networks"
                )
            if match.route is Route.PREFLIGHT:
                return self._preflight(request)
            if match.route is Route.RELEASE:
                # Straight out: the immutable files need neither facts, decision nor CORS.
                served = await self.serve_release(request, match.release, match.release_path)
                served.headers[REQUEST_ID_HEADER] = rid
                return served
            body: bytes | None = None
            if match.route is Route.AGENT:
                # Pairing may name its code or cid in the form body: read before deciding.
                body = await self._read_body(request) if request.can_read_body else b""
                facts = await self._agent_facts(request, match, body)
            else:
                facts = await self._facts(request, match)
            decision = decide(facts, self.holder.current, self.known, self.prefer_policy)
            if decision.reason == "preview":
                self.preview.mark(decision.system)
            if match.route is Route.CURRENT:
                response: web.StreamResponse = self._current(decision)
            elif match.route is Route.CODE_CREATE:
                response = await self._create_code(request, match, decision, rid)
            else:
                response = await self._forward(request, match, decision, rid, body)
                if facts.owner is None and match.route in NOT_MINE:
                    response = await self._ask_others(request, match, decision, response, rid)
        except RequestError as exc:
            response = error_response(exc)
        response.headers[REQUEST_ID_HEADER] = rid
        if route in BROWSER and self.cors_origins:
            self._cors(request, response)
        return response

    async def _facts(self, request: web.BaseRequest, match: Match) -> RequestFacts:
        owner = None
        if match.route in OWNED:
            kind: AffinityKind = "session" if match.route is Route.TOKEN_DELETE else "code"
            owner = await self.affinity.owner(kind, match.ident)
        return RequestFacts(
            match=match,
            owner=owner,
            prefer=request.headers.get(PREFER_HEADER),
            preview=await self.preview.system(request, cookie=match.route in COOKIE_ROUTES),
        )

    async def _agent_facts(
        self, request: web.BaseRequest, match: Match, body: bytes
    ) -> RequestFacts:
        """The owner of the short code or cid an agent request names (first one known)."""
        owner = None
        names = agent_names(request.query, request.headers.get("Content-Type", ""), body)
        for kind, ident in names:
            owner = await self.affinity.owner(kind, ident)  # type: ignore[arg-type]
            if owner is not None:
                break
        return RequestFacts(
            match=match,
            owner=owner,
            prefer=request.headers.get(PREFER_HEADER),
            preview=await self.preview.system(request),
        )

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body:
            raise BodyTooLarge(f"request body over the {self.max_body} byte limit")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(f"request body over the {self.max_body} byte limit") from None

    async def _forward(
        self,
        request: web.BaseRequest,
        match: Match,
        decision: Forward,
        rid: str,
        body: bytes | None = None,
    ) -> web.Response:
        system = decision.system
        route = match.route
        upstream = self.upstreams[system]
        sent = False
        try:
            # One deadline for the whole exchange (SPEC: "a total deadline per request"): a
            # client trickling its body or a gateway trickling its answer cannot hold the
            # request past it, whatever the per-read timeouts allow.
            async with asyncio.timeout(self.total_timeout):
                if body is None and request.can_read_body:
                    body = await self._read_body(request)
                if route is Route.TOKEN_CREATE:
                    doc = parse_json_object(body or b"", "the session description")
                    body = orjson.dumps(rewrite_session_description(doc, self.public[system]))
                headers = request_headers_for(
                    request, self.drop, trusted=request.remote in self.trusted
                )
                headers[REQUEST_ID_HEADER] = rid
                if route in (Route.TOKEN_CREATE, Route.CODE_CREATE, Route.CODE_LOOKUP):
                    # The answer is read for affinity, so it must not come back compressed.
                    headers["Accept-Encoding"] = "identity"
                    if route is Route.TOKEN_CREATE:
                        headers["Content-Type"] = JSON_TYPE
                target = upstream_target(
                    request.path, request.rel_url.raw_query_string, request.raw_path
                )
                sent = True
                started = time.perf_counter()
                answer = await upstream.send(
                    request.method, target, headers, body, idempotent=route in IDEMPOTENT
                )
                elapsed = time.perf_counter() - started
                if answer.held:
                    self._held[id(request)] = self._held.get(id(request), 0) + answer.held
        except TimeoutError:
            if not sent:
                raise RequestTimeout(
                    f"the request body did not arrive within {self.total_timeout:g} s"
                    " (router.total_timeout)"
                ) from None
            exc: RequestError = UpstreamTimeout(
                f"system {system!r} did not complete its answer within {self.total_timeout:g} s"
                " (router.total_timeout)",
                system=system,
            )
            self._upstream_failed(request, route, system, exc, rid)
            raise exc from None
        except RequestError as exc:
            if sent:
                self._upstream_failed(request, route, system, exc, rid)
            raise
        # Counted and learned from right after this answer is written, not before: neither
        # is needed to write it, and on an idle worker every microsecond before the write is
        # latency. A callback queued now runs before the loop next polls for input, so
        # before any follow-up request (which needs this answer first) can be read.
        asyncio.get_running_loop().call_soon(
            self._after, match, system, answer.status, answer.body, elapsed
        )
        out = body_response(answer.body, answer.headers, answer.status)
        out.headers[SYSTEM_HEADER] = system
        if route in (Route.TOKEN_CREATE, Route.CODE_CREATE, Route.CODE_LOOKUP):
            release = self.release_of(system)
            if release:
                out.headers[RELEASE_HEADER] = release
        if route is Route.LIBRARY and answer.status == 200:
            # A previewed answer differs per tester: no shared cache may keep it.
            preview = decision.reason == "preview"
            out.headers["Cache-Control"] = "private, no-store" if preview else LIBRARY_CACHE
            out.headers["Vary"] = "Cookie"
        return out

    async def _create_code(
        self, request: web.BaseRequest, match: Match, decision: Forward, rid: str
    ) -> web.Response:
        """Forward a short-code create; hand out the code only once it is claimed for the
        system that issued it (affinity.Affinity.claim). A code the router still routes to
        another system is never handed out: the same system is asked for another one."""
        try:
            async with asyncio.timeout(self.total_timeout):
                body = await self._read_body(request) if request.can_read_body else b""
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {self.total_timeout:g} s"
                " (router.total_timeout)"
            ) from None
        system = decision.system
        holders = []
        for _ in range(CODE_TRIES):
            answer = await self._forward(request, match, decision, rid, body)
            raw = answer.body if isinstance(answer.body, bytes) else b""
            code = json_field(raw, "shortCode") if answer.status == 200 else None
            if code is None:
                return answer
            holder = await self.affinity.claim("code", code, system)
            if holder is None:
                return answer
            holders.append(holder)
            log.warning(
                "system %r issued short code %s, which %r still holds: asking for another",
                system,
                code,
                holder,
            )
        raise ShortCodeCollision(
            f"system {system!r} answered {CODE_TRIES} short codes in a row that the router"
            f" still routes to {', '.join(sorted(set(holders)))}: try again; if this persists,"
            " the systems' short-code space is nearly used up",
            system=system,
        )

    async def _ask_others(
        self,
        request: web.BaseRequest,
        match: Match,
        decision: Forward,
        response: web.Response,
        rid: str,
    ) -> web.Response:
        """A follow-up with no known issuer, answered "not mine": the issuer may be another
        system (routing.fallbacks); the first answer that is not "not mine" is the one."""
        snapshot = self.holder.current
        others = fallbacks(
            match.route, None, decision.system, response.status, snapshot, self.known
        )
        for other in others:
            try:
                answer = await self._forward(request, match, Forward(other, "fallback"), rid)
            except RequestError:
                continue  # that system is failing: the first answer stands
            if answer.status != response.status:
                return answer
        return response

    def _upstream_failed(
        self, request: web.BaseRequest, route: Route, system: str, exc: RequestError, rid: str
    ) -> None:
        # Logged even without the access log: this is the gateway failing, not a client.
        log.warning(
            "%s %s -> %s (request id %s)", request.method, loggable_path(request.path), exc, rid
        )
        self.observe(route.value, system, 0, None)

    def _after(self, match: Match, system: str, status: int, body: bytes, elapsed: float) -> None:
        """What an upstream answer teaches, once it is on its way: metrics and affinity."""
        self.observe(match.route.value, system, status, elapsed)
        self._learn(match, system, status, body)

    def _learn(self, match: Match, system: str, status: int, body: bytes) -> None:
        """Record or release affinity from an upstream answer."""
        route = match.route
        affinity = self.affinity
        if route is Route.TOKEN_CREATE and status == 200:
            sid = json_field(body, "sessionid")
            if sid:
                affinity.record("session", sid, system)
        # A short code is claimed before its answer leaves (_create_code), not learned here.
        elif route is Route.TOKEN_DELETE and (200 <= status < 300 or status == 404):
            affinity.release("session", match.ident, system)
        elif route is Route.CODE_LOOKUP and status == 200:
            # Live Assist pairing: the agent later names this cid (routing.agent_names).
            cid = json_field(body, "cid")
            if cid:
                affinity.record("cid", cid, system)

    def _current(self, decision: Forward) -> web.Response:
        system = self.config.systems[decision.system]
        release = self.release_of(decision.system)
        dry = rewrite_session_description({}, self.public[system.id])  # what a token gets
        body = {
            "system": system.id,
            "reason": decision.reason,
            "release": release,
            "label": self.label_of(system.id) if release else system.version or None,
            "base": f"/v/{release}" if release else "",
            "public_url": system.public_url,
            "url_scheme_details": dry["urlSchemeDetails"],
        }
        return web.Response(
            body=orjson.dumps(body),
            content_type=JSON_TYPE,
            headers={SYSTEM_HEADER: system.id, "Cache-Control": "no-store"},
        )

    def _origin_allowed(self, origin: str | None) -> bool:
        return origin is not None and ("*" in self.cors_origins or origin in self.cors_origins)

    def _preflight(self, request: web.BaseRequest) -> web.Response:
        origin = request.headers.get("Origin")
        if not self._origin_allowed(origin):
            raise Forbidden(f"origin {origin!r} is not in router.cors_origins")
        assert origin is not None
        allowed = allowed_methods(request.path)
        requested = request.headers.get("Access-Control-Request-Headers", "")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ", ".join(m for m in allowed if m != "OPTIONS"),
                "Access-Control-Allow-Headers": requested or "Content-Type",
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )

    def _cors(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """Answers to browser routes carry CORS headers even if the gateway sent none."""
        origin = request.headers.get("Origin")
        if "Access-Control-Allow-Origin" in response.headers or not self._origin_allowed(origin):
            return
        assert origin is not None
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")


def request_headers_for(
    request: web.BaseRequest, drop: frozenset[str], *, trusted: bool = True
) -> CIMultiDict[str]:
    return request_headers(
        request.headers,
        peer=request.remote or "",
        scheme=request.scheme,
        host=request.host,
        drop=drop,
        trusted=trusted,
    )
