"""router/proxy/routing.py: SPEC's route table as `classify` rows, and `decide` over snapshots."""

from __future__ import annotations

import pytest

from router.errors import BadRequest, MethodNotAllowed, NotFound, SystemOffline
from router.proxy.routing import (
    BROWSER,
    OWNED,
    SESSION_PATH,
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
from router.state.snapshot import Snapshot

# (id, method, path, appkey, expected match)
ROUTES: list[tuple[str, str, str, str | None, Match]] = [
    ("token-create", "POST", "/gateway/sessions/session", None, Match(Route.TOKEN_CREATE)),
    (
        "token-delete",
        "DELETE",
        "/gateway/sessions/session/id/a-0123abcd",
        None,
        Match(Route.TOKEN_DELETE, ident="a-0123abcd"),
    ),
    ("code-create", "PUT", "/assistserver/shortcode/create", None, Match(Route.CODE_CREATE)),
    (
        "code-consumer",
        "GET",
        "/assistserver/shortcode/consumer",
        "1234567",
        Match(Route.CODE_LOOKUP, ident="1234567"),
    ),
    (
        "code-agent",
        "GET",
        "/assistserver/shortcode/agent",
        "7654321",
        Match(Route.CODE_LOOKUP, ident="7654321"),
    ),
    (
        "code-lookup-no-appkey",
        "GET",
        "/assistserver/shortcode/consumer",
        None,
        Match(Route.CODE_LOOKUP, ident=""),
    ),
    ("assist-agent", "POST", "/assistserver/agent", None, Match(Route.AGENT)),
    ("assist-consumer", "POST", "/assistserver/consumer", None, Match(Route.ASSIST)),
    ("library-adapter", "GET", "/gateway/adapter.js", None, Match(Route.LIBRARY)),
    ("library-sdk", "GET", "/gateway/fusion-client-sdk.js", None, Match(Route.LIBRARY)),
    ("library-csdk", "GET", "/gateway/csdk-phone.js", None, Match(Route.LIBRARY)),
    ("library-head", "HEAD", "/gateway/adapter.js", None, Match(Route.LIBRARY)),
    (
        "library-assist",
        "GET",
        "/assistserver/sdk/web/consumer/assist.js",
        None,
        Match(Route.LIBRARY),
    ),
    (
        "library-assist-deep",
        "GET",
        "/assistserver/sdk/web/shared/img/logo.png",
        None,
        Match(Route.LIBRARY),
    ),
    (
        "release-gateway",
        "GET",
        "/v/1.0-3f2a9c/gateway/adapter.js",
        None,
        Match(Route.RELEASE, release="1.0-3f2a9c", release_path="/gateway/adapter.js"),
    ),
    (
        "release-assist",
        "GET",
        "/v/r2/assistserver/sdk/web/consumer/assist.css",
        None,
        Match(
            Route.RELEASE, release="r2", release_path="/assistserver/sdk/web/consumer/assist.css"
        ),
    ),
    (
        "release-head",
        "HEAD",
        "/v/r2/gateway/adapter.js",
        None,
        Match(Route.RELEASE, release="r2", release_path="/gateway/adapter.js"),
    ),
    ("current", "GET", "/router/current", None, Match(Route.CURRENT)),
    ("current-head", "HEAD", "/router/current", None, Match(Route.CURRENT)),
    (
        "preflight-code-create",
        "OPTIONS",
        "/assistserver/shortcode/create",
        None,
        Match(Route.PREFLIGHT),
    ),
    ("preflight-lookup", "OPTIONS", "/assistserver/shortcode/agent", None, Match(Route.PREFLIGHT)),
    ("preflight-assist", "OPTIONS", "/assistserver/consumer", None, Match(Route.PREFLIGHT)),
]


@pytest.mark.parametrize(
    ("method", "path", "appkey", "expected"), [r[1:] for r in ROUTES], ids=[r[0] for r in ROUTES]
)
def test_classify_routes(method: str, path: str, appkey: str | None, expected: Match) -> None:
    assert classify(method, path, appkey) == expected


NOT_FOUND: list[tuple[str, str, str]] = [
    ("root", "GET", "/"),
    ("empty", "GET", ""),
    ("admin", "GET", "/admin"),
    ("metrics", "GET", "/metrics"),
    ("sim-control", "POST", "/_sim/fail"),
    ("stats", "GET", "/stats"),
    ("gateway-dir", "GET", "/gateway"),
    ("gateway-not-js", "GET", "/gateway/adapter.css"),
    ("gateway-nested-js", "GET", "/gateway/sub/adapter.js"),
    ("session-trailing-slash", "POST", "/gateway/sessions/session/"),
    ("session-suffix", "POST", "/gateway/sessions/sessionx"),
    ("delete-no-id", "DELETE", "/gateway/sessions/session/id/"),
    ("delete-no-slash", "DELETE", "/gateway/sessions/session/id"),
    ("delete-nested", "DELETE", "/gateway/sessions/session/id/a/b"),
    ("shortcode-other", "GET", "/assistserver/shortcode/other"),
    ("assist-other", "POST", "/assistserver/admin"),
    ("sdk-root", "GET", "/assistserver/sdk/web/"),
    ("sdk-no-slash", "GET", "/assistserver/sdk/web"),
    ("release-bare", "GET", "/v/r1"),
    ("release-slash", "GET", "/v/r1/"),
    ("release-not-library", "GET", "/v/r1/admin"),
    ("release-no-id", "GET", "/v//gateway/adapter.js"),
    ("release-of-release", "GET", "/v/r1/v/r2/gateway/adapter.js"),
    ("current-suffix", "GET", "/router/current/x"),
    # Path traversal and unclean paths: nothing that could climb out of a known prefix.
    ("dotdot", "GET", "/gateway/../admin"),
    ("dotdot-to-library", "GET", "/assistserver/sdk/web/../../../gateway/adapter.js"),
    ("dotdot-in-sdk", "GET", "/assistserver/sdk/web/consumer/../../../../etc/passwd"),
    ("dotdot-release", "GET", "/v/r1/assistserver/sdk/web/../../../etc/passwd"),
    ("dotdot-release-id", "GET", "/v/../gateway/adapter.js"),
    ("dot-release-id", "GET", "/v/./gateway/adapter.js"),
    ("dot-segment", "GET", "/gateway/./adapter.js"),
    ("dot-in-sdk", "GET", "/assistserver/sdk/web/./consumer/assist.js"),
    ("leading-double-slash", "GET", "//gateway/adapter.js"),
    ("inner-double-slash", "GET", "/gateway//adapter.js"),
    ("sdk-double-slash", "GET", "/assistserver/sdk/web//consumer/assist.js"),
    ("trailing-slash-library", "GET", "/gateway/adapter.js/"),
    ("backslash", "GET", "/gateway\\adapter.js"),
    ("backslash-dotdot", "GET", "/assistserver/sdk/web/a\\..\\..\\x.js"),
    ("nul", "GET", "/gateway/adapter.js\x00"),
    ("nul-in-sdk", "GET", "/assistserver/sdk/web/a\x00.js"),
    ("nul-session", "POST", "/gateway/sessions/session\x00"),
    # What aiohttp hands over for %2F / %2e%2e: the decoded form, refused as well.
    ("decoded-encoded-slash", "GET", "/assistserver/sdk/web/x/../../../stats"),
    ("dotdot-delete", "DELETE", "/gateway/sessions/session/id/.."),
    ("dot-delete", "DELETE", "/gateway/sessions/session/id/."),
]


@pytest.mark.parametrize(
    ("method", "path"), [r[1:] for r in NOT_FOUND], ids=[r[0] for r in NOT_FOUND]
)
def test_classify_not_found(method: str, path: str) -> None:
    with pytest.raises(NotFound) as info:
        classify(method, path)
    assert info.value.status == 404
    assert info.value.to_json()["error"] == "not_found"


# (id, method, path, allowed)
WRONG_METHOD: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("get-session", "GET", "/gateway/sessions/session", ("POST",)),
    ("put-session", "PUT", "/gateway/sessions/session", ("POST",)),
    ("options-session", "OPTIONS", "/gateway/sessions/session", ("POST",)),
    ("lowercase-method", "post", "/gateway/sessions/session", ("POST",)),
    ("get-delete", "GET", "/gateway/sessions/session/id/abc", ("DELETE",)),
    ("post-code-create", "POST", "/assistserver/shortcode/create", ("PUT", "OPTIONS")),
    ("post-lookup", "POST", "/assistserver/shortcode/consumer", ("GET", "OPTIONS")),
    ("get-assist", "GET", "/assistserver/agent", ("POST", "OPTIONS")),
    ("post-library", "POST", "/gateway/adapter.js", ("GET", "HEAD")),
    ("options-library", "OPTIONS", "/assistserver/sdk/web/consumer/assist.js", ("GET", "HEAD")),
    ("delete-release", "DELETE", "/v/r1/gateway/adapter.js", ("GET", "HEAD")),
    ("post-current", "POST", "/router/current", ("GET", "HEAD")),
]


@pytest.mark.parametrize(
    ("method", "path", "allowed"), [r[1:] for r in WRONG_METHOD], ids=[r[0] for r in WRONG_METHOD]
)
def test_classify_method_not_allowed(method: str, path: str, allowed: tuple[str, ...]) -> None:
    with pytest.raises(MethodNotAllowed) as info:
        classify(method, path)
    assert info.value.status == 405
    assert info.value.allowed == allowed
    assert allowed_methods(path) == allowed
    assert method in str(info.value)


def test_allowed_methods_empty_for_foreign_paths() -> None:
    assert allowed_methods("/admin") == ()
    assert allowed_methods("/gateway/sub/x.js") == ()


def test_route_sets() -> None:
    assert {Route.TOKEN_DELETE, Route.CODE_LOOKUP, Route.AGENT} == OWNED
    assert {Route.CODE_CREATE, Route.CODE_LOOKUP, Route.ASSIST, Route.AGENT} == BROWSER


FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("query", "content_type", "body", "expected"),
    [
        ({}, "", b"", ()),
        ({"appkey": "1234567"}, "", b"", (("code", "1234567"),)),
        ({"cid": "a-cid-1"}, "", b"", (("cid", "a-cid-1"),)),
        ({}, FORM, b"appkey=1234567&type=create", (("code", "1234567"),)),
        ({}, FORM + "; charset=UTF-8", b"cid=a-cid-1", (("cid", "a-cid-1"),)),
        ({}, FORM, b"appkey=1&cid=c", (("code", "1"), ("cid", "c"))),
        ({"appkey": "q"}, FORM, b"appkey=b", (("code", "q"),)),
        ({"cid": "q"}, FORM, b"appkey=b", (("code", "b"), ("cid", "q"))),
        ({}, "application/json", b'{"appkey": "1"}', ()),
        ({}, FORM, b"appkey=&cid=", ()),
        ({}, FORM, b"\xff\xfe", ()),
        ({}, "multipart/form-data; boundary=x", b"appkey=1", ()),
    ],
    ids=[
        "nothing",
        "query-appkey",
        "query-cid",
        "form-appkey",
        "form-cid-charset",
        "form-both-code-first",
        "query-wins-over-form",
        "query-cid-form-appkey",
        "json-not-parsed",
        "empty-values",
        "not-utf8",
        "multipart-not-parsed",
    ],
)
def test_agent_names(
    query: dict[str, str], content_type: str, body: bytes, expected: tuple[tuple[str, str], ...]
) -> None:
    assert agent_names(query, content_type, body) == expected


# --- decide ---------------------------------------------------------------------------------

KNOWN = frozenset({"a", "b", "c"})
CREATE = Match(Route.TOKEN_CREATE)
DELETE = Match(Route.TOKEN_DELETE, ident="a-123")
LOOKUP = Match(Route.CODE_LOOKUP, ident="1234567")
AGENT = Match(Route.AGENT)


def snap(active: str = "a", offline: tuple[str, ...] = ()) -> Snapshot:
    return Snapshot(active=active, offline=frozenset(offline))


# (id, facts, snapshot, prefer policy, expected)
DECISIONS: list[tuple[str, RequestFacts, Snapshot, str, Forward]] = [
    (
        "agent-paired-with-old-system",
        RequestFacts(AGENT, owner="a"),
        snap("b"),
        "unless-offline",
        Forward("a", "affinity"),
    ),
    (
        "agent-naming-nothing-known",
        RequestFacts(AGENT, owner=None),
        snap("b"),
        "unless-offline",
        Forward("b", "active"),
    ),
    (
        "agent-pairing-beats-preview",
        RequestFacts(AGENT, owner="a", preview="c"),
        snap("b"),
        "unless-offline",
        Forward("a", "affinity"),
    ),
    (
        "new-session-active",
        RequestFacts(CREATE),
        snap("a"),
        "unless-offline",
        Forward("a", "active"),
    ),
    (
        "new-session-after-switch",
        RequestFacts(CREATE),
        snap("b"),
        "unless-offline",
        Forward("b", "active"),
    ),
    (
        "library-active",
        RequestFacts(Match(Route.LIBRARY)),
        snap("b"),
        "unless-offline",
        Forward("b", "active"),
    ),
    (
        "delete-affinity",
        RequestFacts(DELETE, owner="a"),
        snap("a"),
        "unless-offline",
        Forward("a", "affinity"),
    ),
    (
        "delete-affinity-after-switch",
        RequestFacts(DELETE, owner="a"),
        snap("b"),
        "unless-offline",
        Forward("a", "affinity"),
    ),
    (
        "lookup-affinity-after-switch",
        RequestFacts(LOOKUP, owner="a"),
        snap("b"),
        "unless-offline",
        Forward("a", "affinity"),
    ),
    (
        "delete-owner-unknown",
        RequestFacts(DELETE, owner=None),
        snap("b"),
        "unless-offline",
        Forward("b", "active"),
    ),
    (
        "delete-owner-not-configured",
        RequestFacts(DELETE, owner="zzz"),
        snap("b"),
        "unless-offline",
        Forward("b", "active"),
    ),
    (
        "lookup-owner-unknown",
        RequestFacts(LOOKUP),
        snap("b"),
        "unless-offline",
        Forward("b", "active"),
    ),
    (
        "owner-ignored-for-new-session",
        RequestFacts(CREATE, owner="b"),
        snap("a"),
        "unless-offline",
        Forward("a", "active"),
    ),
    (
        "affinity-beats-preview",
        RequestFacts(DELETE, owner="a", preview="b"),
        snap("a"),
        "unless-offline",
        Forward("a", "affinity"),
    ),
    (
        "affinity-beats-prefer",
        RequestFacts(LOOKUP, owner="a", prefer="b"),
        snap("b"),
        "unless-offline",
        Forward("a", "affinity"),
    ),
    (
        "preview",
        RequestFacts(CREATE, preview="b"),
        snap("a"),
        "unless-offline",
        Forward("b", "preview"),
    ),
    (
        "preview-policy-never",
        RequestFacts(CREATE, preview="b"),
        snap("a"),
        "never",
        Forward("b", "preview"),
    ),
    (
        "preview-of-active",
        RequestFacts(CREATE, preview="a"),
        snap("a"),
        "unless-offline",
        Forward("a", "preview"),
    ),
    (
        "preview-unknown",
        RequestFacts(CREATE, preview="zzz"),
        snap("a"),
        "unless-offline",
        Forward("a", "active"),
    ),
    (
        "preview-beats-prefer",
        RequestFacts(CREATE, preview="b", prefer="c"),
        snap("a"),
        "unless-offline",
        Forward("b", "preview"),
    ),
    (
        "delete-unknown-owner-preview",
        RequestFacts(DELETE, preview="b"),
        snap("a"),
        "unless-offline",
        Forward("b", "preview"),
    ),
    (
        "prefer-honoured",
        RequestFacts(CREATE, prefer="b"),
        snap("a"),
        "unless-offline",
        Forward("b", "prefer"),
    ),
    (
        "prefer-old-after-switch",
        RequestFacts(CREATE, prefer="a"),
        snap("b"),
        "unless-offline",
        Forward("a", "prefer"),
    ),
    (
        "prefer-active",
        RequestFacts(CREATE, prefer="a"),
        snap("a"),
        "unless-offline",
        Forward("a", "prefer"),
    ),
    (
        "prefer-policy-never",
        RequestFacts(CREATE, prefer="b"),
        snap("a"),
        "never",
        Forward("a", "active"),
    ),
    (
        "prefer-offline-falls-back",
        RequestFacts(CREATE, prefer="b"),
        snap("a", ("b",)),
        "unless-offline",
        Forward("a", "active"),
    ),
    (
        "prefer-unknown",
        RequestFacts(CREATE, prefer="zzz"),
        snap("a"),
        "unless-offline",
        Forward("a", "active"),
    ),
    (
        "prefer-empty",
        RequestFacts(CREATE, prefer=""),
        snap("a"),
        "unless-offline",
        Forward("a", "active"),
    ),
    (
        "other-offline-irrelevant",
        RequestFacts(CREATE),
        snap("a", ("b",)),
        "unless-offline",
        Forward("a", "active"),
    ),
    (
        "owner-online-other-offline",
        RequestFacts(DELETE, owner="a"),
        snap("b", ("c",)),
        "unless-offline",
        Forward("a", "affinity"),
    ),
]


@pytest.mark.parametrize(
    ("facts", "snapshot", "policy", "expected"),
    [d[1:] for d in DECISIONS],
    ids=[d[0] for d in DECISIONS],
)
def test_decide(facts: RequestFacts, snapshot: Snapshot, policy: str, expected: Forward) -> None:
    assert decide(facts, snapshot, KNOWN, policy) == expected


def test_decide_default_policy_honours_prefer() -> None:
    assert decide(RequestFacts(CREATE, prefer="b"), snap("a"), KNOWN) == Forward("b", "prefer")


# (id, facts, snapshot, the system the 503 names)
OFFLINE: list[tuple[str, RequestFacts, Snapshot, str]] = [
    ("active-offline", RequestFacts(CREATE), snap("a", ("a",)), "a"),
    ("active-offline-library", RequestFacts(Match(Route.LIBRARY)), snap("b", ("b",)), "b"),
    ("owner-offline", RequestFacts(DELETE, owner="a"), snap("b", ("a",)), "a"),
    ("owner-offline-lookup", RequestFacts(LOOKUP, owner="a"), snap("b", ("a",)), "a"),
    ("unknown-owner-active-offline", RequestFacts(DELETE), snap("b", ("b",)), "b"),
    ("preview-offline", RequestFacts(CREATE, preview="b"), snap("a", ("b",)), "b"),
    ("prefer-and-active-offline", RequestFacts(CREATE, prefer="b"), snap("a", ("a", "b")), "a"),
]


@pytest.mark.parametrize(
    ("facts", "snapshot", "system"), [o[1:] for o in OFFLINE], ids=[o[0] for o in OFFLINE]
)
def test_decide_offline(facts: RequestFacts, snapshot: Snapshot, system: str) -> None:
    with pytest.raises(SystemOffline) as info:
        decide(facts, snapshot, KNOWN)
    error = info.value
    assert error.status == 503
    assert error.system == system
    assert repr(system) in error.message
    assert error.to_json() == {
        "error": "system_offline",
        "message": error.message,
        "system": system,
    }


# --- request targets (issue 12, defect 1) -----------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["http://x/gateway/sessions/session", "evil://y/gateway/sessions/session", "*", "h:443", ""],
)
def test_only_origin_form_targets_are_proxied(target: str) -> None:
    with pytest.raises(BadRequest):
        check_origin_form(target)
    check_origin_form("/gateway/sessions/session")


@pytest.mark.parametrize(
    ("path", "raw_query", "raw_target", "sent"),
    [
        (SESSION_PATH, "", SESSION_PATH, SESSION_PATH),
        (SESSION_PATH, "", "/gateway/%73essions/session", SESSION_PATH),
        (
            "/assistserver/shortcode/consumer",
            "appkey=12%2034",
            "",
            "/assistserver/shortcode/consumer?appkey=12%2034",
        ),
        ("/gateway/sessions/session/id/a b?c", "", "", "/gateway/sessions/session/id/a%20b%3Fc"),
        ("/gateway/sessions/session/id/x@y:z", "", "", "/gateway/sessions/session/id/x@y:z"),
    ],
)
def test_upstream_target_is_the_classified_path_encoded_again(
    path: str, raw_query: str, raw_target: str, sent: str
) -> None:
    assert upstream_target(path, raw_query, raw_target) == sent


# (id, route, owner, tried, status, offline, expected systems to ask next)
FALLBACKS: list[tuple[str, Route, str | None, str, int, tuple[str, ...], tuple[str, ...]]] = [
    ("delete-404-unknown-owner", Route.TOKEN_DELETE, None, "a", 404, (), ("b", "c")),
    ("lookup-403-unknown-owner", Route.CODE_LOOKUP, None, "b", 403, (), ("a", "c")),
    ("offline-systems-skipped", Route.TOKEN_DELETE, None, "a", 404, ("c",), ("b",)),
    ("known-owner-is-final", Route.TOKEN_DELETE, "a", "a", 404, (), ()),
    ("delete-answered", Route.TOKEN_DELETE, None, "a", 200, (), ()),
    ("delete-403-is-not-not-mine", Route.TOKEN_DELETE, None, "a", 403, (), ()),
    ("lookup-404-is-not-not-mine", Route.CODE_LOOKUP, None, "a", 404, (), ()),
    ("token-create-never", Route.TOKEN_CREATE, None, "a", 404, (), ()),
    ("agent-never", Route.AGENT, None, "a", 403, (), ()),
]


@pytest.mark.parametrize(
    ("route", "owner", "tried", "status", "offline", "expected"),
    [f[1:] for f in FALLBACKS],
    ids=[f[0] for f in FALLBACKS],
)
def test_fallbacks(
    route: Route,
    owner: str | None,
    tried: str,
    status: int,
    offline: tuple[str, ...],
    expected: tuple[str, ...],
) -> None:
    assert fallbacks(route, owner, tried, status, snap(offline=offline), KNOWN) == expected
