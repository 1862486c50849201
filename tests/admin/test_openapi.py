"""The OpenAPI document is built from the code and says what the code does.

- every route of the admin app is an `Operation` (or a page route), so none is undocumented;
- statuses and error codes come from the error hierarchy, system ids from the config;
- the limits the document states are the ones requests meet (400/413 with the JSON shape);
- the event stream sends the events its schema describes.
The third-party fuzzer over the whole document is tests/admin/test_fuzz.py.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import jsonschema_rs
import orjson
import pytest
import schemathesis
from aiohttp import web

from router.admin.live import _event
from router.admin.openapi import error_classes, openapi_document
from router.admin.page import PAGE_ROUTES, STATIC_PREFIX
from router.admin.routes import OPERATIONS
from router.admin.spec import ACCESS_ERRORS, Access, Body, Operation
from router.errors import RequestError
from tests.helpers import RedisServer, RunningRouter

TOKEN = {"Authorization": "Bearer test-admin-token"}
JSON = "application/json"


def _refs(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A JSON Schema 2020-12 validator for `schema`, its refs resolved inside `doc`."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


def test_every_reference_resolves_and_every_operation_is_complete() -> None:
    doc = openapi_document(OPERATIONS, ("a", "b"))
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    schemes = doc["components"]["securitySchemes"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)), "operation ids must be unique"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["summary"] and op["responses"], (method, path)
            for requirement in op["security"]:
                assert set(requirement) <= set(schemes)
            if method == "post":
                assert op["security"], f"POST {path} must need credentials"
                assert "401" in op["responses"] and "403" in op["responses"]
            for name in re.findall(r"{(\w+)}", path):
                assert any(p["name"] == name and p["in"] == "path" for p in op["parameters"])


def test_the_document_is_valid_openapi_3_1() -> None:
    """Checked with schemathesis's OpenAPI 3.1 meta-schema (what client generators expect)."""
    doc = openapi_document(OPERATIONS, ("a", "b"))
    schemathesis.openapi.from_dict(doc).validate()
    broken = orjson.loads(orjson.dumps(doc))
    broken["paths"]["/api/switch"]["post"]["responses"]["200"]["content"][JSON]["bogus"] = 1
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


def test_system_ids_are_the_configured_enum() -> None:
    doc = openapi_document(OPERATIONS, ("blue", "green"))
    assert doc["components"]["schemas"]["SystemId"]["enum"] == ["blue", "green"]
    switch = doc["components"]["schemas"]["GuardedSwitchRequest"]
    assert switch["properties"]["system"]["$ref"] == "#/components/schemas/SystemId"
    assert switch["additionalProperties"] is False
    (param,) = doc["paths"]["/api/systems/{system}/offline"]["post"]["parameters"]
    assert param["schema"] == {"$ref": "#/components/schemas/SystemId"}
    (param,) = doc["paths"]["/api/releases/refresh"]["post"]["parameters"]
    assert param["schema"]["items"] == {"$ref": "#/components/schemas/SystemId"}
    assert param["style"] == "form" and param["explode"] is True


def test_error_answers_come_from_the_error_hierarchy() -> None:
    doc = openapi_document(OPERATIONS, ("a", "b"))
    all_codes = {cls.code for cls in error_classes()}
    assert doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"] == sorted(all_codes)
    for op in OPERATIONS:
        responses = doc["paths"][op.path][op.method.lower()]["responses"]
        expected: dict[int, set[str]] = {}
        for cls in op.all_errors():
            expected.setdefault(cls.status, set()).add(cls.code)
        for status, codes in expected.items():
            if status in op.answers:
                continue
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}
            assert set(schema["allOf"][1]["properties"]["error"]["enum"]) == codes, (op, status)
        documented = {int(s) for s in responses} - {op.ok_status}
        assert documented == set(expected) | set(op.answers), op.operation_id
        # What the declaration implies is there without being written.
        for cls in ACCESS_ERRORS[op.access]:
            assert str(cls.status) in responses
        if op.body is not None:
            assert {"400", "413"} <= responses.keys()
        if op.query is not None or op.path_params is not None:
            assert "400" in responses
        if op.access is not Access.PUBLIC:
            assert {"401", "403"} <= responses.keys()


def test_access_levels_are_what_the_access_middleware_enforces() -> None:
    """auth.admin_access guards every path under /api/: GET needs a reader, anything else a
    writer; nothing outside /api/ is guarded. The declarations must say the same."""
    for op in OPERATIONS:
        if not op.path.startswith("/api/"):
            expected = Access.PUBLIC
        else:
            expected = Access.READ if op.method == "GET" else Access.WRITE
        assert op.access is expected, f"{op.method} {op.path}: access={expected}"


def test_every_error_class_has_its_own_code() -> None:
    classes = [cls for cls in error_classes() if cls is not RequestError]
    assert len({cls.code for cls in classes}) == len(classes)


async def test_every_admin_route_is_a_documented_operation(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    app: web.Application = router.server.admin_runner.app
    declared = {(op.method, op.path) for op in OPERATIONS}
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    undocumented = sorted(
        f"{method} {path}"
        for method, path in registered - declared - PAGE_ROUTES
        if path != STATIC_PREFIX
    )
    assert not undocumented, (
        f"admin routes registered without an Operation: {', '.join(undocumented)}. "
        "Register them by adding an `Operation(method, path, handler, summary=..., tag=..., "
        "access=Access.PUBLIC|READ|WRITE, ok=<answer model>, body=/query=/path_params=<request "
        "model>, errors={<RequestError subclass>: '<why>'})` to the OPERATIONS tuple of the "
        "handler's module (router/admin/spec.py, docs/admin-api.md); a browser page that is "
        "not JSON API goes in router/admin/page.py PAGE_ROUTES instead."
    )
    assert declared <= registered
    async with http.get(router.admin_url + "/api/openapi.json") as resp:
        assert resp.status == 401  # every /api/ route needs a credential, the description too
    async with http.get(router.admin_url + "/api/openapi.json", headers=TOKEN) as resp:
        assert resp.status == 200
        served = await resp.json()
    assert served == orjson.loads(orjson.dumps(openapi_document(OPERATIONS, ("a", "b"))))
    async with http.get(router.admin_url + "/api/docs", headers=TOKEN) as resp:
        assert resp.status == 200
        html = await resp.text()
    assert "/api/switch" in html and "bearerAuth" in html
    # The page shows the limits the document states.
    assert "integer 1..1000, default 50" in html and "one of a, b" in html
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")


async def _call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    async with http.request(method, url, **kwargs) as resp:
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("count=1001", "less than or equal to 1000"),
        ("count=0", "greater than or equal to 1"),
        ("count=many", "valid integer"),
    ],
)
async def test_audit_count_outside_its_documented_limits_is_400(
    router: RunningRouter, http: aiohttp.ClientSession, query: str, problem: str
) -> None:
    status, body = await _call(http, "GET", f"{router.admin_url}/api/audit?{query}", headers=TOKEN)
    assert status == 400 and body["error"] == "bad_request"
    assert body["message"].startswith("query parameter count: ") and problem in body["message"]
    status, body = await _call(
        http, "GET", f"{router.admin_url}/api/audit?count=1000", headers=TOKEN
    )
    assert status == 200


@pytest.mark.parametrize(
    ("payload", "code", "words"),
    [
        ({"system": ""}, "bad_request", "body field system: unknown system ''"),
        ({"system": "c"}, "bad_request", "configured systems: a, b"),
        ({"system": 1}, "bad_request", "body field system: Input should be a valid string"),
        ({"system": "b", "forse": True}, "bad_request", "body field forse: Extra inputs"),
        ({"system": "b", "via": "x" * 17}, "bad_request", "body field via: "),
        ({"system": "b", "via": "a b"}, "bad_request", "body field via: "),
        ({}, "bad_request", "body field system: Field required"),
        ([1, 2], "malformed_json", "the body must be a JSON object"),
    ],
)
async def test_switch_refuses_what_the_document_refuses(
    router: RunningRouter,
    http: aiohttp.ClientSession,
    payload: object,
    code: str,
    words: str,
) -> None:
    url = router.admin_url + "/api/switch"
    status, body = await _call(http, "POST", url, data=orjson.dumps(payload), headers=TOKEN)
    assert (status, body["error"]) == (400, code) and words in body["message"], body
    assert router.active == "a"


async def test_unknown_systems_in_paths_and_queries_are_400(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    status, body = await _call(
        http, "POST", router.admin_url + "/api/systems/ozd/offline", headers=TOKEN
    )
    assert status == 400 and "path parameter system: unknown system 'ozd'" in body["message"]
    status, body = await _call(
        http, "POST", router.admin_url + "/api/releases/refresh?system=a&system=", headers=TOKEN
    )
    assert status == 400 and "query parameter system.1: unknown system ''" in body["message"]
    # A repeated system is checked once.
    status, body = await _call(
        http, "POST", router.admin_url + "/api/releases/refresh?system=b&system=b", headers=TOKEN
    )
    assert status == 200 and [r["system"] for r in body["results"]] == ["b"]


async def test_a_body_over_the_limit_is_413_json(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    big = orjson.dumps({"system": "b", "via": "x" * 70_000})
    status, body = await _call(
        http, "POST", router.admin_url + "/api/switch", data=big, headers=TOKEN
    )
    assert status == 413 and body["error"] == "body_too_large", body
    assert router.active == "a"


async def _events(resp: aiohttp.ClientResponse, wanted: int) -> list[dict[str, str]]:
    """Read `wanted` server-sent events. As the SSE standard has it, a block without
    `data` (the first, `retry: 2000`) dispatches no event."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    while len(events) < wanted:
        line = (await resp.content.readline()).decode().rstrip("\n")
        if line:
            name, _, value = line.partition(": ")
            current[name] = value
            continue
        if "data" in current:
            events.append(current)
        current = {}
    return events


def _check_event(doc: dict[str, Any], event: dict[str, str]) -> str:
    """Validate one event against the document's event-stream schema (one event, as
    schemathesis reads it); its JSON `data` against the branch's contentSchema (an
    annotation, which JSON Schema validators do not apply)."""
    stream = doc["paths"]["/api/events"]["get"]["responses"]["200"]["content"]
    schema = stream["text/event-stream"]["schema"]
    _validator(doc, schema).validate(event)
    (branch,) = [
        b for b in schema["oneOf"] if b["properties"]["event"] == {"const": event["event"]}
    ]
    content = branch["properties"]["data"]
    assert content["contentMediaType"] == "application/json"
    _validator(doc, content["contentSchema"]).validate(orjson.loads(event["data"]))
    return event["event"]


async def test_the_event_stream_sends_what_the_document_describes(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    async with http.get(router.admin_url + "/api/openapi.json", headers=TOKEN) as resp:
        doc = await resp.json()
    async with http.get(router.admin_url + "/api/events", headers=TOKEN) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        assert await resp.content.readline() == b"retry: 2000\n"
        first = await _events(resp, 1)
        # A change wakes the stream with a new status event.
        await http.post(router.admin_url + "/api/switch", json={"system": "b"}, headers=TOKEN)
        later = await _events(resp, 2)
    kinds = [_check_event(doc, e) for e in first + later]
    assert kinds == ["status", "status", "status"]
    assert any(orjson.loads(e["data"])["active"] == "b" for e in later)
    # The session-expiry event, as the stream writes it.
    raw = _event("expired", {"message": "log in again"}).decode()
    expired = dict(line.split(": ", 1) for line in raw.strip().splitlines())
    assert _check_event(doc, expired) == "expired"
    # Data that breaks the schema is caught (the check can fail).
    bad = {"event": "status", "data": orjson.dumps({"active": 1}).decode()}
    with pytest.raises(jsonschema_rs.ValidationError):
        _check_event(doc, bad)


def _sample(op: Operation) -> tuple[str, dict[str, Any]]:
    """A schema-valid request for `op`: path `{system}` = b, a body naming system b."""
    path = op.path.replace("{system}", "b")
    kwargs: dict[str, Any] = {"headers": TOKEN}
    if op.body is not None:
        fields = op.body.model_fields
        kwargs["data"] = orjson.dumps({"system": "b"} if "system" in fields else {})
    return path, kwargs


async def test_with_redis_down_every_operation_answers_as_documented(
    router: RunningRouter, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    """The store outage is what a fuzzer against a healthy router never sees: every
    operation's answer then (503s, degraded 200s) must still be a documented one."""
    async with http.get(router.admin_url + "/api/openapi.json", headers=TOKEN) as resp:
        doc = await resp.json()
    redis_server.stop()
    seen: dict[str, int] = {}
    for op in OPERATIONS:
        path, kwargs = _sample(op)
        async with http.request(op.method, router.admin_url + path, **kwargs) as resp:
            responses = doc["paths"][op.path][op.method.lower()]["responses"]
            assert str(resp.status) in responses, (op.operation_id, resp.status)
            seen[op.operation_id] = resp.status
            content = responses[str(resp.status)]["content"]
            assert resp.content_type in content, (op.operation_id, resp.content_type)
            if resp.content_type == "application/json":
                schema = content["application/json"]["schema"]
                _validator(doc, schema).validate(await resp.json())
    assert seen["switch"] == 503 and seen["audit"] == 503 and seen["releases"] == 503
    assert seen["offline"] == 503 and seen["online"] == 503
    assert seen["status"] == 200 and seen["readyz"] == 200  # degraded: fail-static


def test_a_body_is_required_when_one_of_its_fields_is_and_the_success_status_is_declared() -> None:
    class Optional_(Body):
        force: bool = False

    async def optional_body(request: web.Request) -> web.Response:
        raise AssertionError("never called")

    op = Operation(
        "POST",
        "/api/x",
        optional_body,
        summary="x",
        tag="actions",
        access=Access.WRITE,
        body=Optional_,
        ok=Optional_,
        ok_status=201,
    )
    doc = openapi_document((*OPERATIONS, op), ("a", "b"))
    assert doc["paths"]["/api/x"]["post"]["requestBody"]["required"] is False
    assert "201" in doc["paths"]["/api/x"]["post"]["responses"]
    assert "200" not in doc["paths"]["/api/x"]["post"]["responses"]
    assert doc["paths"]["/api/switch"]["post"]["requestBody"]["required"] is True
