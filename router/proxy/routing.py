"""Which system gets this request? Pure functions over plain data, tested without sockets.

`classify` recognises SPEC's route table from method and path; `decide` picks the system
from the request facts (affinity already looked up, preview already authenticated) and the
current state snapshot. Neither reads a clock, a socket or Redis.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, quote

from router.errors import BadRequest, MethodNotAllowed, NotFound, RequestError, SystemOffline
from router.proxy.paths import RELEASE_PREFIX, clean, is_library, is_release
from router.state.snapshot import Snapshot


class Route(enum.Enum):
    TOKEN_CREATE = "token_create"
    TOKEN_DELETE = "token_delete"
    CODE_CREATE = "code_create"
    CODE_LOOKUP = "code_lookup"
    ASSIST = "assist"
    AGENT = "agent"  # POST /assistserver/agent: paired with the system of its code or cid
    LIBRARY = "library"
    RELEASE = "release"
    CURRENT = "current"
    PREFLIGHT = "preflight"


# Routes whose target is the system that issued an id, not the active one.
OWNED = frozenset({Route.TOKEN_DELETE, Route.CODE_LOOKUP, Route.AGENT})
# Routes a gateway may receive twice with the same effect as once: only these are sent a
# second time after a connection broke mid-request (router/proxy/upstream.py, may_retry). A PUT to
# create a short code is not among them: each one makes a new code.
IDEMPOTENT = frozenset({Route.TOKEN_DELETE, Route.CODE_LOOKUP, Route.LIBRARY})
# New sessions: what a progressive rollout shares out (SPEC section 6).
NEW_SESSION = frozenset({Route.TOKEN_CREATE, Route.CODE_CREATE})
# Routes a browser calls directly (FCSDK-API.md): CORS preflight is answered for these.
BROWSER = frozenset({Route.CODE_CREATE, Route.CODE_LOOKUP, Route.ASSIST, Route.AGENT})
AGENT_PATH = "/assistserver/agent"
FORM_TYPE = "application/x-www-form-urlencoded"

# Routes that mint or delete tokens and short codes: back-end only (trusted_networks). A
# short-code create is also a browser route when CORS is configured for it (proxy.py).
MINT = frozenset({Route.TOKEN_CREATE, Route.TOKEN_DELETE, Route.CODE_CREATE})

SESSION_PATH = "/gateway/sessions/session"
DELETE_PREFIX = "/gateway/sessions/session/id/"
CODE_CREATE_PATH = "/assistserver/shortcode/create"
CODE_LOOKUP_PATHS = ("/assistserver/shortcode/consumer", "/assistserver/shortcode/agent")
ASSIST_PATHS = ("/assistserver/agent", "/assistserver/consumer")
CURRENT_PATH = "/router/current"


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    ident: str = ""  # the session id or short code the request names, if any
    release: str = ""  # for RELEASE: the release id
    release_path: str = ""  # for RELEASE: the library path inside it, with leading '/'


# Characters a path segment may carry unencoded (RFC 3986 pchar) plus the separator.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"


def check_origin_form(raw_target: str) -> None:
    """Refuse any request target that is not a plain path (RFC 9112 section 3.2.1).

    An absolute-form target (`POST http://x/gateway/...`), an authority-form one (CONNECT) or
    `*` would otherwise reach the URL glued for the gateway: only origin-form is proxied.
    """
    if raw_target[:1] != "/":
        raise BadRequest(
            "the request target must be a path such as /gateway/sessions/session "
            "(absolute-form and other targets are refused)"
        )


def upstream_target(path: str, raw_query: str, raw_target: str = "") -> str:
    """What follows the configured gateway base: the decoded path that was classified,
    encoded again, plus the query as sent. Nothing of the request line reaches the authority
    part of the gateway's URL, and the gateway sees the very path the route was chosen for
    (no `%73essions` read one way by the router and another by the gateway).

    `raw_target` (the request line's target) equal to `path` means nothing was encoded and
    there is no query: the common case (the token route) then skips the encoding.
    """
    if raw_target == path:
        return path
    target = quote(path, safe=_PATH_SAFE)
    return f"{target}?{raw_query}" if raw_query else target


def allowed_methods(path: str) -> tuple[str, ...]:
    """Methods a known path accepts; empty for a path that is not ours."""
    if path == SESSION_PATH:
        return ("POST",)
    if (
        path.startswith(DELETE_PREFIX)
        and len(path) > len(DELETE_PREFIX)
        and "/" not in path[len(DELETE_PREFIX) :]
    ):
        return ("DELETE",)
    if path == CODE_CREATE_PATH:
        return ("PUT", "OPTIONS")
    if path in CODE_LOOKUP_PATHS:
        return ("GET", "OPTIONS")
    if path in ASSIST_PATHS:
        return ("POST", "OPTIONS")
    if path == CURRENT_PATH:
        return ("GET", "HEAD")
    if is_library(path) or is_release(path):
        return ("GET", "HEAD")
    return ()


def classify(method: str, path: str, appkey: str | None = None) -> Match:
    """Map a request line to a route of SPEC's table; raise NotFound / MethodNotAllowed."""
    if not clean(path):
        raise NotFound("no such route")
    allowed = allowed_methods(path)
    if not allowed:
        raise NotFound("no such route: token-router forwards only the FCSDK and Live Assist routes")
    if method not in allowed:
        raise MethodNotAllowed(f"{method} is not allowed here", allowed=allowed)
    if method == "OPTIONS":
        return Match(Route.PREFLIGHT)
    if path == SESSION_PATH:
        return Match(Route.TOKEN_CREATE)
    if path.startswith(DELETE_PREFIX):
        return Match(Route.TOKEN_DELETE, ident=path[len(DELETE_PREFIX) :])
    if path == CODE_CREATE_PATH:
        return Match(Route.CODE_CREATE)
    if path in CODE_LOOKUP_PATHS:
        return Match(Route.CODE_LOOKUP, ident=appkey or "")
    if path == AGENT_PATH:
        return Match(Route.AGENT)
    if path in ASSIST_PATHS:
        return Match(Route.ASSIST)
    if path == CURRENT_PATH:
        return Match(Route.CURRENT)
    if path.startswith(RELEASE_PREFIX):
        release, _, rest = path[len(RELEASE_PREFIX) :].partition("/")
        return Match(Route.RELEASE, release=release, release_path="/" + rest)
    return Match(Route.LIBRARY)


def agent_names(
    query: Mapping[str, str], content_type: str, body: bytes
) -> tuple[tuple[str, str], ...]:
    """What a Live Assist agent request names, as (affinity kind, id) in the order they
    decide: the short code (`appkey`), then the correlation id (`cid`); the query first, then
    a form-encoded body. Only the agent route calls this: no other request parses a body."""
    fields: dict[str, str] = {}
    if body and content_type.split(";", 1)[0].strip().lower() == FORM_TYPE:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        for name, values in parse_qs(text, keep_blank_values=False).items():
            if name in ("appkey", "cid") and values:
                fields[name] = values[0]
    for name in ("appkey", "cid"):
        value = query.get(name)
        if value:
            fields[name] = value
    out = []
    if fields.get("appkey"):
        out.append(("code", fields["appkey"]))
    if fields.get("cid"):
        out.append(("cid", fields["cid"]))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What `decide` needs to know about a request, gathered by the handler beforehand."""

    match: Match
    owner: str | None = None  # system that issued match.ident (affinity), if known
    prefer: str | None = None  # X-Token-Router-Prefer, as sent
    preview: str | None = None  # system named by a preview header whose secret checked out


@dataclass(frozen=True, slots=True)
class Forward:
    system: str
    reason: str  # "active", "affinity", "prefer", "preview", "rollout" or "fallback"


Decision = Forward


def decide(
    facts: RequestFacts,
    snapshot: Snapshot,
    known: frozenset[str],
    prefer_policy: str = "unless-offline",
    draw: Callable[[], float] = random.random,
) -> Decision:
    """Pick the system for a request; raise the RequestError to answer instead.

    Owned routes (token delete, short-code look-up, an agent request naming a code or cid)
    follow the issuer even after a switch;
    an unknown issuer falls back to the choice for a new session. New sessions go to the
    preview system, else an honoured preference, else, during a rollout, to its target with
    the step's probability, else the active system.

    The rollout share is an independent draw per new session (`draw`, uniform in [0, 1)),
    called only while a rollout runs. Every instance applies the same probability, so the
    fleet's share is the step's share whatever the balancer does; a hash would need a key
    that is stable per user and spread evenly, and a token request carries none (the web
    app's back end makes every call, with one webAppId). A user who must stay on one system
    is pinned with X-Token-Router-Prefer, which decides first.
    """
    route = facts.match.route
    if route in OWNED and facts.owner in known:
        assert facts.owner is not None
        _raise_if_offline(facts.owner, snapshot)
        return Forward(facts.owner, "affinity")
    if facts.preview in known:
        assert facts.preview is not None
        _raise_if_offline(facts.preview, snapshot)
        return Forward(facts.preview, "preview")
    if (
        prefer_policy == "unless-offline"
        and facts.prefer in known
        and facts.prefer is not None
        and not snapshot.is_offline(facts.prefer)
    ):
        return Forward(facts.prefer, "prefer")
    share = snapshot.rollout
    if (
        share is not None
        and route in NEW_SESSION
        and share.target != snapshot.active
        and not snapshot.is_offline(share.target)
        and draw() < share.fraction
    ):
        return Forward(share.target, "rollout")
    _raise_if_offline(snapshot.active, snapshot)
    return Forward(snapshot.active, "active")


# The answer by which a system says an id is not one it issued (FCSDK-API.md): a token delete
# answered 404, a short-code look-up answered 403.
NOT_MINE = {Route.TOKEN_DELETE: 404, Route.CODE_LOOKUP: 403}


def fallbacks(
    route: Route,
    owner: str | None,
    tried: str,
    status: int,
    snapshot: Snapshot,
    known: frozenset[str],
) -> tuple[str, ...]:
    """Other systems to ask when a follow-up whose issuer was not known came back "not mine".

    An owner is unknown for a moment after Redis returns: a record made while it was away is
    replayed behind the answer, and another instance may see the follow-up first. Before
    rollouts that fallback (the active system) was always right; with a rollout sharing new
    sessions, the issuer may be the other system. Both routes are idempotent, so asking the
    next online system is safe, and a system that does not know the id answers harmlessly.
    """
    if owner is not None or NOT_MINE.get(route) != status:
        return ()
    return tuple(s for s in sorted(known) if s != tried and not snapshot.is_offline(s))


def _raise_if_offline(system: str, snapshot: Snapshot) -> None:
    if snapshot.is_offline(system):
        raise SystemOffline(
            f"system {system!r} is offline (marked by an operator); try again later",
            system=system,
        )


__all__ = [
    "BROWSER",
    "MINT",
    "NOT_MINE",
    "OWNED",
    "fallbacks",
    "Decision",
    "Forward",
    "Match",
    "NEW_SESSION",
    "RequestError",
    "RequestFacts",
    "Route",
    "agent_names",
    "allowed_methods",
    "check_origin_form",
    "classify",
    "decide",
    "upstream_target",
]
