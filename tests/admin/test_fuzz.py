"""schemathesis, a third-party property-based API tester, against the admin API.

A router with two simulated systems and a real Redis; schemathesis reads `/api/openapi.json`
and runs every phase (examples, coverage, fuzzing, stateful) with every check, as the admin
token holder, with a fixed seed and a bounded number of examples. Any failure fails the
test, with schemathesis's own report (each failure with a curl line to reproduce it).

It runs as schemathesis's command line in a subprocess: its pytest integration loads the
schema when the module is imported and calls the API synchronously from the test, which
cannot reach a router served by this test's own event loop; the CLI is also exactly what an
independent run uses (docs/admin-api.md shows that command).

tests/admin/schemathesis.toml (shared with the independent run) has schemathesis read one event of
the endless `GET /api/events` stream and check it against the document, instead of waiting
for the request timeout.
"""

from __future__ import annotations

import asyncio
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from router.admin.app_keys import AUTH as AUTH_KEY
from router.responses import SYSTEM_HEADER
from router.state.shared_throttle import SharedThrottle
from router.throttle import Limits
from tests.helpers import SESSION_BODY, SESSION_PATH, Gateway, RunningRouter

SEED = 20261129
MAX_EXAMPLES = 20  # per operation: ~15 s idle, ~30 s at load 12 on 2 cores
TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.timeout(240)


CONFIG = Path(__file__).with_name("schemathesis.toml")


def schemathesis_command(schema_url: str, report: Path, seed: int, examples: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        schema_url,
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--seed",
        str(seed),
        "--max-examples",
        str(examples),
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--request-timeout",
        "20",
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        "--no-color",
    ]


def junit_counts(report: Path) -> tuple[int, int, int]:
    """(test cases, failures, errors) of schemathesis's JUnit report."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    cases = sum(int(s.get("tests", 0)) for s in suites)
    failures = sum(int(s.get("failures", 0)) for s in suites)
    errors = sum(int(s.get("errors", 0)) for s in suites)
    return cases, failures, errors


async def test_schemathesis_finds_nothing_and_the_router_still_serves(
    router: RunningRouter,
    gateways: dict[str, Gateway],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """`router` (conftest.py): systems a (active) and b, a real Redis, the test token."""
    # schemathesis checks hundreds of times that a wrong credential is refused; the
    # credential throttle (router/throttle.py, tests/test_throttle.py) would then answer
    # every later request from this address 429 unchecked, the valid ones too, and leave
    # nothing else fuzzed. Its limits are raised for this router only.
    admin_app: web.Application = router.server.admin_runner.app
    admin_app[AUTH_KEY].throttle = SharedThrottle(
        None, "admin", Limits(per_address=1_000_000, overall=1_000_000, per_address_per_minute=1e6)
    )
    report = tmp_path / "junit.xml"
    command = schemathesis_command(
        router.admin_url + "/api/openapi.json", report, SEED, MAX_EXAMPLES
    )
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp_path,  # schemathesis writes nothing into the repository
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=200)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = out.decode(errors="replace")
    print(output)  # pytest shows it with -s, or with the failure
    assert proc.returncode == 0 and "No issues found" in output, output[-12000:]
    cases, failures, errors = junit_counts(report)
    assert (failures, errors) == (0, 0) and cases >= 13, output[-12000:]

    # The fuzzer really changed state as the token holder (the writes were not all refused).
    async with http.get(router.admin_url + "/api/audit?count=1000", headers=AUTH) as resp:
        entries = (await resp.json())["entries"]
    actions = {e["action"] for e in entries if e["source"].startswith("api")}
    assert {"switch", "offline"} <= actions, actions

    # Whatever state it left, the router is ready and the API alone brings it back.
    async with http.get(router.admin_url + "/readyz") as resp:
        assert resp.status == 200, await resp.text()
    for system in gateways:
        async with http.post(
            f"{router.admin_url}/api/systems/{system}/online", headers=AUTH
        ) as resp:
            assert resp.status == 200
    async with http.post(
        router.admin_url + "/api/switch", json={"system": "a"}, headers=AUTH
    ) as resp:
        assert resp.status == 200
    async with http.post(router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
        assert r.status == 200, await r.text()
        assert r.headers[SYSTEM_HEADER] == "a"
    await http.post(router.admin_url + "/api/switch", json={"system": "b"}, headers=AUTH)
    async with http.post(router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
        assert r.status == 200 and r.headers[SYSTEM_HEADER] == "b"
