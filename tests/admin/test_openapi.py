"""The OpenAPI document describes every admin API route, and is served with a docs view."""

from __future__ import annotations

import re

import aiohttp
from aiohttp import web

from router.admin.openapi import openapi_document
from tests.helpers import ADMIN_AUTH, RunningRouter


def _refs(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def test_every_reference_resolves_and_every_write_is_secured() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    schemes = doc["components"]["securitySchemes"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["summary"] and op["responses"], (method, path)
            for requirement in op["security"]:
                assert set(requirement) <= set(schemes)
            if method == "post":
                assert op["security"], f"POST {path} must need credentials"
                assert "401" in op["responses"] and "403" in op["responses"]
            for name in re.findall(r"{(\w+)}", path):
                assert any(p["name"] == name for p in op["parameters"])


async def test_every_api_route_of_the_admin_app_is_documented(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    running = router
    app: web.Application = running.server.admin_runner.app
    documented = {
        (method.upper(), path)
        for path, item in openapi_document()["paths"].items()
        for method in item
    }
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and (route.resource.canonical.startswith("/api/") or route.resource.canonical.endswith("z"))
    }
    assert registered, "no API routes found"
    assert registered - documented == set()
    async with http.get(running.admin_url + "/api/openapi.json") as resp:
        assert resp.status == 401  # every /api/ route needs a credential, the description too
    async with http.get(running.admin_url + "/api/openapi.json", headers=ADMIN_AUTH) as resp:
        assert resp.status == 200
        served = await resp.json()
    assert served["paths"].keys() == openapi_document()["paths"].keys()
    async with http.get(running.admin_url + "/api/docs", headers=ADMIN_AUTH) as resp:
        assert resp.status == 200
        html = await resp.text()
    assert "/api/switch" in html and "bearerAuth" in html
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
