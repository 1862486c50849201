"""The release service end to end: real routers, Redis and gateways serving `/v/...`."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import brotli  # type: ignore[import-untyped]
import orjson

from router.config import build_config
from router.releases.model import (
    Current,
    LibraryFile,
    ReleaseMeta,
)
from router.releases.service import Releases
from router.releases.store import Activity
from router.simulator.library import LIBRARY_PATHS, library_files
from router.state.keys import Keys
from tests.helpers import (
    HOST,
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    make_config,
    router_data,
    wait_until,
    write_toml,
)
from tests.releases.made import made_release

# Most end-to-end tests need a few small files, not the ~2.3 MB a full release weighs.
SMALL = [
    "/gateway/adapter.js",
    "/assistserver/sdk/web/consumer/assist.css",
    "/assistserver/sdk/web/shared/img/logo.png",
]
JS = "/gateway/adapter.js"
CSS = "/assistserver/sdk/web/consumer/assist.css"
PNG = "/assistserver/sdk/web/shared/img/logo.png"
BIG = "/gateway/fusion-client-sdk.js"
ADMIN_AUTH = {"Authorization": "Bearer test-admin-token"}


async def current(
    http: aiohttp.ClientSession, router: RunningRouter, prefer: str | None = None
) -> dict[str, Any]:
    headers = {"X-Token-Router-Prefer": prefer} if prefer else {}
    async with http.get(router.proxy_url + "/router/current", headers=headers) as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


async def wait_release(
    http: aiohttp.ClientSession,
    router: RunningRouter,
    prefer: str | None = None,
    not_: str | None = None,
) -> dict[str, Any]:
    """/router/current once it names a release (other than `not_`)."""
    found: dict[str, Any] = {}

    async def ready() -> bool:
        found.update(await current(http, router, prefer))
        return found["release"] is not None and found["release"] != not_

    await wait_until(ready, timeout=15)
    return found


async def fetch(
    http: aiohttp.ClientSession, url: str, headers: Mapping[str, str] | None = None
) -> tuple[int, Mapping[str, str], bytes]:
    sent = {"Accept-Encoding": "identity", **(headers or {})}
    async with http.get(url, headers=sent, auto_decompress=False) as resp:
        return resp.status, resp.headers, await resp.read()


async def raw_status(router: RunningRouter, target: str) -> tuple[int, bytes]:
    """A request line sent as is: aiohttp's client would normalise the traversal away."""
    port = int(router.proxy_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_upgrade_keeps_old_url_serving_old_bytes_from_another_instance(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(redis_server.url, gateways, release_paths=list(LIBRARY_PATHS))
    first = await routers(config)
    before = await wait_release(http, first)
    assert before["system"] == "a" and before["label"] == "1.0"
    await wait_release(http, first, prefer="b")  # both systems checked before the restart
    old = before["release"]
    assert before["base"] == f"/v/{old}"
    async with http.post(first.proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
        assert resp.status == 200
        assert resp.headers["X-Token-Router-System"] == "a"
        assert resp.headers["X-Token-Router-Release"] == old
    v1 = library_files("1.0")
    status, _, body = await fetch(http, first.proxy_url + before["base"] + BIG)
    assert status == 200 and body == v1[BIG][0]

    # A is upgraded in place; the router restarts and notices the new release.
    async with http.post(gateways["a"].url + "/_sim/version", json={"version": "2.0"}) as resp:
        assert resp.status == 200
    await first.server.stop()
    restarted = await routers(config)
    after = await wait_release(http, restarted, not_=old)
    new = after["release"]
    assert after["system"] == "a" and new != old
    # A@2.0 serves exactly B@2.0's bytes: one release, stored once, labelled from B (the
    # label may follow a moment later when A's check recorded the release first).
    assert new == (await current(http, restarted, prefer="b"))["release"]

    async def labelled() -> bool:
        label: object = (await current(http, restarted))["label"]
        return label == "2.0"

    await wait_until(labelled, timeout=10)
    async with http.post(restarted.proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
        assert resp.headers["X-Token-Router-Release"] == new

    # A second instance that never saw 1.0, with system A gone altogether.
    await gateways["a"].stop()
    second = await routers(config)
    for path in LIBRARY_PATHS:
        status, headers, body = await fetch(http, f"{second.proxy_url}/v/{old}{path}")
        assert status == 200, path
        assert body == v1[path][0], path  # byte for byte
        assert headers["Content-Type"] == v1[path][1]
    status, _, body = await fetch(http, f"{second.proxy_url}/v/{new}{BIG}")
    assert status == 200 and body == library_files("2.0")[BIG][0]


async def test_headers_etag_304_and_head(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    router = await routers(make_config(redis_server.url, gateways, release_paths=SMALL))
    base = router.proxy_url + (await wait_release(http, router))["base"]
    v1 = library_files("1.0")
    for path in SMALL:
        status, headers, body = await fetch(http, base + path)
        assert status == 200 and body == v1[path][0]
        assert headers["Content-Type"] == v1[path][1]
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert headers["Vary"] == "Accept-Encoding"
        assert headers["X-Content-Type-Options"] == "nosniff"
        etag = headers["ETag"]
        assert etag.startswith('"') and not etag.startswith("W/")
        for condition in (etag, f'"other", {etag}', f"W/{etag}", "*"):
            status, again, body = await fetch(http, base + path, {"If-None-Match": condition})
            assert status == 304 and body == b""
            assert again["ETag"] == etag and again["Cache-Control"] == headers["Cache-Control"]
        status, _, body = await fetch(http, base + path, {"If-None-Match": '"stale"'})
        assert status == 200 and body == v1[path][0]
    async with http.head(base + JS, headers={"Accept-Encoding": "identity"}) as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == len(v1[JS][0])
        assert await resp.read() == b""


async def test_gzip_and_brotli_round_trips(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    router = await routers(make_config(redis_server.url, gateways, release_paths=SMALL))
    base = router.proxy_url + (await wait_release(http, router))["base"]
    original = library_files("1.0")[JS][0]
    etags = set()
    for accept, encoding, decode in (
        ("gzip, deflate, br", "br", brotli.decompress),
        ("gzip", "gzip", gzip.decompress),
        ("br;q=0, gzip", "gzip", gzip.decompress),
        ("identity", None, bytes),
    ):
        status, headers, body = await fetch(http, base + JS, {"Accept-Encoding": accept})
        assert status == 200
        assert headers.get("Content-Encoding") == encoding
        assert decode(body) == original
        if encoding:
            assert len(body) < len(original)
        etags.add(headers["ETag"])
        status, _, _ = await fetch(
            http, base + JS, {"Accept-Encoding": accept, "If-None-Match": headers["ETag"]}
        )
        assert status == 304
    assert len(etags) == 3  # one strong validator per representation
    status, headers, body = await fetch(http, base + PNG, {"Accept-Encoding": "gzip, br"})
    assert "Content-Encoding" not in headers and body == library_files("1.0")[PNG][0]


async def test_traversal_and_unknown_paths_are_404(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    router = await routers(make_config(redis_server.url, gateways, release_paths=SMALL))
    rel = (await wait_release(http, router))["release"]
    status, _ = await raw_status(router, f"/v/{rel}{JS}")
    assert status == 200
    attempts = [
        f"/v/{rel}/gateway/../gateway/adapter.js",
        f"/v/{rel}/gateway/%2e%2e/gateway/adapter.js",
        f"/v/{rel}/gateway/%2E%2E/%2E%2E/etc/passwd",
        f"/v/{rel}/assistserver/sdk/web/consumer/..%2f..%2f..%2f..%2fgateway/adapter.js",
        f"/v/{rel}/assistserver/sdk/web/%252e%252e/consumer/assist.css",
        f"/v/{rel}//gateway/adapter.js",
        f"/v/{rel}/gateway//adapter.js",
        f"/v/{rel}/gateway/%2fadapter.js",
        f"//v/{rel}/gateway/adapter.js",
        f"/v/{rel}/gateway/./adapter.js",
        f"/v/{rel}/gateway\\..\\gateway\\adapter.js",
        f"/v/{rel}/gateway/adapter.js%00",
        f"/v/../v/{rel}/gateway/adapter.js",
        f"/v/{rel}/../{rel}/gateway/adapter.js",
        f"/v/{rel.upper()}/gateway/adapter.js",
        f"/v/{rel}x/gateway/adapter.js",
        "/v/0123456789abcdef/gateway/adapter.js",  # well-formed, never stored
        f"/v/{rel}/gateway/fusion-client-sdk.js",  # a library path, not in this release
        f"/v/{rel}/gateway/sessions/session",
        f"/v/{rel}/stats",
        f"/v/{rel}/",
    ]
    for target in attempts:
        status, body = await raw_status(router, target)
        assert status == 404, target
        assert b'"error":"not_found"' in body, target


async def test_an_upgrade_under_unchanged_config_gets_no_false_label(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(
        redis_server.url, gateways, release_paths=SMALL, release_check_interval=0.3
    )
    router = await routers(config)
    before = await wait_release(http, router)
    assert before["label"] == "1.0"
    async with http.post(gateways["a"].url + "/_sim/version", json={"version": "1.1"}) as resp:
        assert resp.status == 200
    upgraded = await wait_release(http, router, not_=before["release"])
    # systems.a.version still says 1.0, which already names the old release: no false label.
    assert upgraded["label"] is None


async def test_retention_expires_releases_no_longer_active(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    config = make_config(
        redis_server.url,
        gateways,
        release_paths=SMALL,
        release_retention_days=2 / 86_400,  # two seconds
        release_check_interval=0.3,
    )
    router = await routers(config)
    old = (await wait_release(http, router))["release"]
    assert (await fetch(http, f"{router.proxy_url}/v/{old}{JS}"))[0] == 200  # cached now
    async with http.post(gateways["a"].url + "/_sim/version", json={"version": "1.1"}) as resp:
        assert resp.status == 200
    # The new release's label is not asserted here: with two seconds of retention the old
    # release may expire before a starved check labels the new one, and then `1.0` names
    # nothing else (the next test holds the label rule end to end, at the real retention).
    new = (await wait_release(http, router, not_=old))["release"]

    prefix = config.router.key_prefix

    async def expired() -> bool:
        status = (await fetch(http, f"{router.proxy_url}/v/{old}{JS}"))[0]
        # The index of releases is trimmed by the next check after the expiry.
        return status == 404 and redis_server.command("ZSCORE", prefix + ":releases", old) == "$-1"

    await wait_until(expired, timeout=15, interval=0.1)
    assert redis_server.command("EXISTS", f"{prefix}:release:{old}:files") == ":0"
    assert redis_server.command("EXISTS", f"{prefix}:release:{old}:meta") == ":0"
    # The active one is re-marked at every check and lives on.
    status, _, body = await fetch(http, f"{router.proxy_url}/v/{new}{JS}")
    assert status == 200 and body == library_files("1.1")[JS][0]


async def test_redis_away_cached_files_still_served(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    router = await routers(make_config(redis_server.url, gateways, release_paths=SMALL))
    info = await wait_release(http, router)
    url = router.proxy_url + info["base"] + CSS
    status, headers, body = await fetch(http, url)
    assert status == 200
    cache = router.server.runtime.releases.files.cache
    held = cache.get(info["release"], CSS)
    assert held is not None and "br" in held.forms

    redis_server.stop()
    for _ in range(3):
        again = await fetch(http, url)
        assert again[0] == 200 and again[2] == body
    status, _, _ = await fetch(http, url, {"If-None-Match": headers["ETag"]})
    assert status == 304
    assert (await current(http, router))["release"] == info["release"]
    # Not cached here and the store is away: a clear, retryable answer rather than a 404.
    status, _, _ = await fetch(http, f"{router.proxy_url}/v/0123456789abcdef{JS}")
    assert status == 503
    async with http.post(router.admin_url + "/api/releases/refresh", headers=ADMIN_AUTH) as resp:
        results = (await resp.json())["results"]
        assert all(r["error"] and "not stored" in r["error"] for r in results)
        assert {r["release"] for r in results if r["system"] == "a"} == {info["release"]}

    # Redis returns empty (no persistence): the instance notices the active releases are gone
    # and stores them again at once, not at the next scheduled check (a minute away here),
    # serving what it holds meanwhile.
    redis_server.start()

    async def stored_again() -> bool:
        assert (await fetch(http, url))[2] == body
        async with http.get(router.admin_url + "/api/releases", headers=ADMIN_AUTH) as resp:
            listed = {r["release"] for r in (await resp.json()).get("releases", [])}
        return info["release"] in listed

    await wait_until(stored_again, timeout=15, interval=0.1)
    # Stored again from the bytes this instance held, not compressed a second time (a second
    # brotli pass and a second copy of every file would raise the worker's peak RSS).
    again_held = cache.get(info["release"], CSS)
    assert again_held is not None
    assert again_held.forms["br"].body is held.forms["br"].body
    assert again_held.forms[""].body is held.forms[""].body


async def test_hand_out_follows_the_issuing_and_preferred_system(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    router = await routers(make_config(redis_server.url, gateways, release_paths=SMALL))
    a = await wait_release(http, router)
    b = await wait_release(http, router, prefer="b")
    assert (a["system"], b["system"]) == ("a", "b")
    assert b["release"] != a["release"] and b["label"] == "2.0"
    assert b["base"] == f"/v/{b['release']}"
    prefer_b = {"X-Token-Router-Prefer": "b"}
    async with http.post(
        router.proxy_url + SESSION_PATH, json=SESSION_BODY, headers=prefer_b
    ) as resp:
        assert resp.headers["X-Token-Router-System"] == "b"
        assert resp.headers["X-Token-Router-Release"] == b["release"]
    async with http.put(router.proxy_url + "/assistserver/shortcode/create") as resp:
        assert resp.headers["X-Token-Router-Release"] == a["release"]
        code = (await resp.json())["shortCode"]
    lookup = f"{router.proxy_url}/assistserver/shortcode/consumer?appkey={code}"
    async with http.get(lookup) as resp:
        assert resp.status == 200
        assert resp.headers["X-Token-Router-Release"] == a["release"]
    status, _, body = await fetch(http, router.proxy_url + b["base"] + JS)
    assert status == 200 and body == library_files("2.0")[JS][0]
    # Unversioned paths still reach the active system, with a short cache lifetime.
    status, headers, body = await fetch(http, router.proxy_url + JS)
    assert status == 200 and body == library_files("1.0")[JS][0]
    assert headers["Cache-Control"] == "public, max-age=60"
    assert headers["X-Token-Router-System"] == "a"


async def test_size_guard_refuses_oversized_release(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
) -> None:
    router = await routers(
        make_config(redis_server.url, gateways, release_paths=SMALL, release_max_bytes=50_000)
    )
    async with http.post(router.admin_url + "/api/releases/refresh", headers=ADMIN_AUTH) as resp:
        results = (await resp.json())["results"]
    assert all("release_max_bytes" in r["error"] for r in results)
    doc = await current(http, router)
    assert doc["release"] is None and doc["base"] == ""
    async with http.post(router.proxy_url + SESSION_PATH, json=SESSION_BODY) as resp:
        assert resp.status == 200 and "X-Token-Router-Release" not in resp.headers
    async with http.get(router.admin_url + "/api/releases", headers=ADMIN_AUTH) as resp:
        doc = await resp.json()
    assert doc["releases"] == []
    assert "release_max_bytes" in doc["systems"]["a"]["error"]


async def test_memory_store_serves_releases(
    gateways: dict[str, Gateway], routers: RouterFactory, http: aiohttp.ClientSession
) -> None:
    router = await routers(make_config("memory://", gateways, release_paths=SMALL))
    info = await wait_release(http, router)
    status, _, body = await fetch(http, router.proxy_url + info["base"] + CSS)
    assert status == 200 and body == library_files("1.0")[CSS][0]


async def run_cli(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENROUTER_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_admin_api_and_cli_list_and_refresh(
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    data = router_data(redis_server.url, gateways, release_paths=SMALL)
    data["systems"]["b"]["stats_url"] = gateways["b"].url + "/stats"
    config_file = write_toml(tmp_path / "router.toml", data)
    router = await routers(build_config(data, {}))
    a = await wait_release(http, router)
    b = await wait_release(http, router, prefer="b")

    async with http.get(router.admin_url + "/api/releases", headers=ADMIN_AUTH) as resp:
        doc = await resp.json()
    assert {r["release"] for r in doc["releases"]} == {a["release"], b["release"]}
    assert doc["systems"]["b"]["release"] == b["release"]
    listed_a = next(r for r in doc["releases"] if r["release"] == a["release"])
    assert listed_a["last_system"] == "a" and listed_a["files"] == len(SMALL)
    async with http.post(router.admin_url + "/api/releases/refresh") as resp:
        assert resp.status == 401
    async with http.post(
        router.admin_url + "/api/releases/refresh?system=zz", headers=ADMIN_AUTH
    ) as resp:
        assert resp.status == 400

    # B is upgraded; the CLI notices it, and the running router follows the store.
    async with http.post(gateways["b"].url + "/_sim/version", json={"version": "3.0"}) as resp:
        assert resp.status == 200
    code, out, err = await run_cli(
        "releases", "refresh", "--config", str(config_file), "--system", "b"
    )
    assert code == 0, err
    assert "b: " in out and "(3.0)" in out and f"before: {b['release']}" in out
    newer = await wait_release(http, router, prefer="b", not_=b["release"])
    assert newer["label"] == "3.0"  # reported by the gateway's stats_url

    code, out, err = await run_cli("releases", "list", "--config", str(config_file))
    assert code == 0, err
    for release in (a["release"], b["release"], newer["release"]):
        assert release in out
    assert "LAST SYSTEM" in out and "EXPIRES" in out
    line = next(x for x in out.splitlines() if x.startswith(newer["release"]))
    assert "3.0" in line and line.rstrip().endswith("b")
    # A bare `releases` lists, as an operator expects (options before or after the action)
    assert (await run_cli("releases", "--config", str(config_file))) == (code, out, err)
    assert (await run_cli("releases", "--config", str(config_file), "list")) == (code, out, err)
    code, doc, err = await run_cli("releases", "--json", "--config", str(config_file))
    assert code == 0 and newer["release"] in orjson.loads(doc)["systems"].values(), err

    code, out, err = await run_cli(
        "releases", "refresh", "--config", str(config_file), "--system", "zz"
    )
    assert code == 2 and err.count("\n") == 1 and "unknown system 'zz'" in err
    data["router"]["redis_url"] = "memory://"
    memory_file = write_toml(tmp_path / "memory.toml", data)
    code, out, err = await run_cli("releases", "list", "--config", str(memory_file))
    assert code == 2 and err.startswith("token-router: error: router.redis_url is memory://")


async def test_close_leaves_no_archive_or_prewarm_running(
    redis_server: RedisServer, gateways: dict[str, Gateway], tmp_path: Path
) -> None:
    """A check being stopped may run on past its cancel (Python 3.11's wait_for can swallow
    it, router/cancellation.py) and start an archive on its way out; close() must not leave that
    task pending with a Redis connection when the loop ends (a flake seen under load)."""
    config = make_config(
        redis_server.url,
        gateways,
        release_paths=list(LIBRARY_PATHS),
        release_dir=str(tmp_path / "releases"),
    )
    releases = Releases.create(config, Keys(config.router.key_prefix), {})
    meta = ReleaseMeta(
        id="0123456789abcdef",
        digest="0" * 64,
        label="1.0",
        files={},
        created=0.0,
        last_active=0.0,
        last_system="a",
    )

    async def check_that_runs_on() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # the swallowed cancel
            await asyncio.Event().wait()
        releases.archiver.archive_soon(meta, None)
        releases.view.adopt("a", meta, prewarm=True)

    releases.tasks.start(check_that_runs_on())
    await asyncio.sleep(0)  # the check is waiting
    await releases.close()
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert left == [] and not releases.tasks


async def test_restore_survives_a_check_adopting_meanwhile(
    redis_server: RedisServer, gateways: dict[str, Gateway], tmp_path: Path
) -> None:
    """The write-back after an empty Redis names the release each system serves, awaiting
    Redis per system, while a check may adopt a release for another system: that must not
    end the write-back ("dictionary changed size during iteration"), which left it due until
    the next Redis outage (a flake of tests/flows/test_recovery.py)."""
    config = make_config(
        redis_server.url,
        gateways,
        release_paths=list(LIBRARY_PATHS),
        release_dir=str(tmp_path / "releases"),
    )
    releases = Releases.create(config, Keys(config.router.key_prefix), {})
    body = library_files("1.0")[SMALL[0]][0]
    files = [LibraryFile(SMALL[0], "application/javascript", body)]
    meta = made_release(files, "1.0")
    await releases.store.put(meta, files)
    releases.view.current["a"] = Current(meta.id, "1.0")
    # A check adopts a release for another system exactly while the write-back awaits Redis
    # for a system: at each of its touches (real Redis underneath). This used to be a task
    # adopting one more system every loop turn for as long as restore() ran: on a loaded
    # machine, while restore() waited for the archive's low-priority thread, it added tens of
    # thousands of systems, each a Redis round trip for the write-back, and the test hung.
    touch = releases.store.touch
    adopted: list[str] = []

    async def touch_while_a_check_adopts(activity: Activity) -> None:
        system = f"s{len(adopted)}"
        releases.view.current[system] = Current(meta.id, "1.0")
        adopted.append(system)
        await touch(activity)

    releases.store.touch = touch_while_a_check_adopts  # type: ignore[method-assign]
    try:
        assert await releases.archiver.restore() == 0  # nothing archived; the pointers named again
    finally:
        await releases.close()
    assert adopted == ["s0"]  # one touch (a's), one adoption meanwhile, and no error
    assert redis_server.command("GET", "tokenrouter:system:a:release").endswith(meta.id)
