"""deploy/prometheus: the rules pass `promtool check rules`, their unit tests pass
`promtool test rules` (series in, alerts out), every alert is tested firing and has its
section in docs/deploy.md, and every metric they name is one a running router exports.

promtool comes from Debian's prometheus package: scripts/test unpacks the one binary into the
virtual environment (scripts/venv.sh, ensure_promtool). CI must have it; elsewhere the
promtool tests are skipped, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy.metric_names import PROMETHEUS_OWN, documented, exported, referenced
from tests.helpers import ADMIN_TOKEN, SESSION_BODY, SESSION_PATH, RunningRouter

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "token-router.rules.yml"
TESTS = ROOT / "deploy" / "prometheus" / "tests" / "token-router.test.yml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: scripts/test installs it (ensure_promtool)")
        pytest.skip("promtool is not installed: scripts/test unpacks it from Debian's prometheus")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_check_rules() -> None:
    result = run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_rule_unit_tests() -> None:
    result = run("test", "rules", str(TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The unit tests can fail: the same tests against rules with one threshold changed."""
    text = RULES.read_text(encoding="utf-8")
    wrong = text.replace("tokenrouter:gateway_error_share:ratio5m > 0.05", "x > 0.05").replace(
        "x > 0.05", "tokenrouter:gateway_error_share:ratio5m > 0.5"
    )
    assert wrong != text
    (tmp_path / "tests").mkdir()
    (tmp_path / "token-router.rules.yml").write_text(wrong, encoding="utf-8")
    shutil.copy(TESTS, tmp_path / "tests" / TESTS.name)
    result = run("test", "rules", str(tmp_path / "tests" / TESTS.name))
    assert result.returncode != 0
    assert "TokenRouterGatewayErrors" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_documented() -> None:
    doc = yaml.safe_load(TESTS.read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in doc["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert set(alerts) == fired
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    headings = {h.lower() for h in re.findall(r"^#+ (\w+)$", deploy_doc, re.M)}
    for name, rule in alerts.items():
        assert rule["annotations"]["runbook"] == f"docs/deploy.md#{name.lower()}"
        assert name.lower() in headings, f"docs/deploy.md has no section {name}"
        assert rule["labels"]["severity"] in ("critical", "warning")


def expressions() -> list[str]:
    return [rule["expr"] for rule in rules()]


def test_rules_name_documented_metrics() -> None:
    names = set().union(*(referenced(e) for e in expressions()))
    assert names, "the rules name no router metric"
    assert names <= documented(), names - documented()


async def test_rules_name_what_a_router_exports(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    async with http.post(router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
        assert r.status == 200
    async with http.get(router.admin_url + "/metrics") as resp:
        text = await resp.text()
    names = set().union(*(referenced(e) for e in expressions()))
    assert names <= exported(text), names - exported(text)
    # `up` is the only other series the rules use: Prometheus records it for every target.
    others = {
        word
        for e in expressions()
        for word in re.findall(r"(?<![:\w{\"])([a-z_]+)\{", e)
        if not word.startswith("tokenrouter_")
    }
    assert others <= PROMETHEUS_OWN


async def test_metrics_pass_promtool_check_metrics(
    router: RunningRouter, http: aiohttp.ClientSession
) -> None:
    """The exposition the rules read is clean under Prometheus' own linter, with a rollout
    (so the rollout families have samples) and traffic."""
    async with http.post(router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
        assert r.status == 200
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"system": "b", "steps": "5,100", "interval": 60}
    async with http.post(router.admin_url + "/api/rollout", json=body, headers=auth) as resp:
        assert resp.status == 201, await resp.text()
    async with http.post(router.admin_url + "/api/rollout/abort", json={}, headers=auth) as resp:
        assert resp.status == 200, await resp.text()
    async with http.get(router.admin_url + "/metrics") as resp:
        text = await resp.text()
    assert "tokenrouter_rollout_ended_timestamp_seconds{" in text
    result = subprocess.run(
        [promtool(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""
