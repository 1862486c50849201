"""What passes through untouched: Live Assist forms and query strings, CORS answers."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.helpers import (
    RunningRouter,
)


@pytest.fixture
def router_options() -> dict[str, Any]:
    return {"cors_origins": ["https://shop.example.com"]}


async def test_live_assist_forms_and_query_strings_pass_intact(
    pair: tuple[RunningRouter, RunningRouter], http: aiohttp.ClientSession
) -> None:
    r1, _ = pair
    form = {"username": "agent 7", "password": "p&ss=word", "type": "create"}
    async with http.post(r1.proxy_url + "/assistserver/agent?x=1&y=%20z", data=form) as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc["form"] == form
    assert doc["system"] == "a"


async def test_cors_preflight_and_pass_through(
    pair: tuple[RunningRouter, RunningRouter], http: aiohttp.ClientSession
) -> None:
    r1, _ = pair
    origin = "https://shop.example.com"
    async with http.options(
        r1.proxy_url + "/assistserver/shortcode/create",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type",
        },
    ) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == origin
        assert "PUT" in resp.headers["Access-Control-Allow-Methods"]
        assert resp.headers["Access-Control-Allow-Headers"] == "content-type"
        assert "Set-Cookie" not in resp.headers
    async with http.options(
        r1.proxy_url + "/assistserver/shortcode/create",
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "PUT"},
    ) as resp:
        assert resp.status == 403
    async with http.put(
        r1.proxy_url + "/assistserver/shortcode/create", headers={"Origin": origin}
    ) as resp:
        assert resp.status == 200
        # The gateway's own CORS answer passes through.
        assert resp.headers["Access-Control-Allow-Origin"] == origin
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
