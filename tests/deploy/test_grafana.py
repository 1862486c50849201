"""deploy/grafana: the dashboard's every expression names metrics a running router exports
(and docs/operations.md lists), parses as PromQL (`promtool check rules`), and the dashboard
shows what an operator watches: the active system and rollout, drain per system, token rate
and error share, gateway latency, propagation and instances, loop stalls, memory."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml  # type: ignore[import-untyped]

from tests.deploy.metric_names import documented, exported, referenced
from tests.deploy.test_prometheus import promtool
from tests.helpers import SESSION_BODY, SESSION_PATH, RunningRouter

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "token-router.json"
# Grafana's variables, as a query would see them.
VARIABLES = {"$job": "token-router", "$__rate_interval": "1m"}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def expressions() -> list[str]:
    exprs = [t["expr"] for p in panels() for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_layout() -> None:
    doc = dashboard()
    assert doc["uid"] == "token-router"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels():
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["description"], f"{p['title']}: say what it shows"
        assert p["targets"] and p["datasource"]["uid"] == "${datasource}"
        assert p["type"] in ("stat", "timeseries")


def test_shows_what_operators_watch() -> None:
    names = set().union(*(referenced(e) for e in expressions()))
    assert {
        "tokenrouter_active",  # the active system
        "tokenrouter_rollout_percent",  # rollout share
        "tokenrouter_new_sessions_percent",  # and every system's share of new sessions
        "tokenrouter_drain_open",  # open counts per system
        "tokenrouter_drain_rate",  # drain
        "tokenrouter_requests_total",  # token rate, error share
        "tokenrouter_upstream_seconds_bucket",  # latency
        "tokenrouter_state_generation",  # propagation, instances
        "tokenrouter_ready",  # instances
        "tokenrouter_loop_stall_seconds_count",  # loop stalls
        "tokenrouter_resident_memory_bytes",  # RSS
    } <= names


def test_names_documented_metrics_only() -> None:
    names = set().union(*(referenced(e) for e in expressions()))
    assert names <= documented(), names - documented()
    for expr in expressions():
        # Any other series name (a selector or a metric-name argument) would be a metric the
        # router does not export.
        for word in re.findall(r"(?<![:\w{\"])([a-z_][a-z0-9_]*)\s*\{", expr):
            assert word.startswith("tokenrouter_"), f"{word} in {expr}"


def test_every_expression_parses(tmp_path: Path) -> None:
    rules = []
    for i, expr in enumerate(e for e in expressions() if not e.startswith("label_values")):
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        rules.append({"record": f"dashboard:expression_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_names_what_a_running_router_exports(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    async with http.post(router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
        assert r.status == 200
    async with http.get(router.admin_url + "/metrics") as resp:
        text = await resp.text()
    names = set().union(*(referenced(e) for e in expressions()))
    missing = names - exported(text)
    assert not missing, f"the dashboard names metrics the router does not export: {missing}"
