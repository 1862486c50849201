"""`token-router drill`: the report's verdict (pure), and real drills run from outside."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from router.drill.harness import check_inject
from router.drill.report import KINDS, Report, Step, Tally
from router.errors import UsageError

ENV = {k: v for k, v in os.environ.items() if not k.startswith("TOKENROUTER_")}


def report(tally: Tally, upgrade_exit: int = 0, expect_abort: bool = False) -> Report:
    return Report(
        duration=3,
        rate=5,
        store="memory://",
        routers=2,
        inject=(),
        tally=tally,
        steps=[Step("preflight", "ok", 0.1)],
        upgrade_exit=upgrade_exit,
        drain_seconds=1.0,
        faults=[],
        expect_abort=expect_abort,
    )


def test_verdict_needs_all_three_counts_at_zero() -> None:
    tally = Tally()
    tally.ok("token")
    assert report(tally).passed and report(tally).exit_code == 0
    spoilers: list[Callable[[Tally], None]] = [
        lambda t: t.fail("token", "answered 502"),
        lambda t: t.wrong("delete reached b"),
        lambda t: t.bad_bytes("other release"),
    ]
    for spoil in spoilers:
        t = Tally()
        spoil(t)
        r = report(t)
        assert not r.passed and r.exit_code == 1
        assert "verdict: FAIL (exit 1)" in r.table()
    # Failures provoked on purpose do not count; the expected abort decides then.
    t = Tally()
    t.fail("token", "500 from b", provoked=True)
    assert report(t, upgrade_exit=4, expect_abort=True).passed
    assert not report(t, upgrade_exit=0, expect_abort=True).passed
    assert not report(Tally(), upgrade_exit=1).passed  # a drain that timed out fails it


def test_examples_are_bounded() -> None:
    t = Tally()
    for i in range(50):
        t.wrong(f"case {i}")
    assert t.wrong_system == 50 and len(t.examples["wrong_system"]) == 5


@contextlib.contextmanager
def default_ports_taken() -> Iterator[None]:
    """Hold the default ports 8080/8081 where they are free (someone else's otherwise)."""
    held = []
    for port in (8080, 8081):
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
        except OSError:
            sock.close()
    try:
        yield
    finally:
        for sock in held:
            sock.close()


def drill(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", "drill", *args],
        capture_output=True,
        text=True,
        timeout=150,
        env=ENV,
    )


def check_passed(result: subprocess.CompletedProcess[str], doc: dict[str, object]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert doc["passed"] is True
    assert doc["failed_total"] == 0 and doc["wrong_system"] == 0 and doc["wrong_bytes"] == 0
    requests = doc["requests"]
    assert isinstance(requests, dict)
    for kind in ("token", "shortcode_create", "shortcode_lookup", "token_delete", "library"):
        assert requests[kind] > 0, kind
    steps = doc["steps"]
    assert isinstance(steps, list)
    assert [s["step"] for s in steps] == [
        "preflight",
        "smoke",
        "switch",
        "watch",
        "drain",
        "offline",
    ]
    assert all(s["result"] == "ok" for s in steps)
    assert doc["drain_seconds"] is not None
    per_system = doc["new_tokens_per_system"]
    assert isinstance(per_system, dict) and per_system.get("a") and per_system.get("b")
    assert "verdict: PASS (exit 0)" in result.stdout
    for kind in KINDS:
        assert kind in result.stdout


@pytest.mark.timeout(170)
def test_drill_with_a_redis_and_a_router_restart(tmp_path: Path) -> None:
    out = tmp_path / "drill.json"
    with default_ports_taken():
        result = drill(
            # Shorter than the router restart takes (at 65 %, then 1 s out of rotation before
            # it stops and starts again): the traffic must hold on until the fault is over,
            # where it used to end first and cut the restart off, unreported.
            "--duration",
            "2",
            "--rate",
            "6",
            "--inject",
            # Both faults: a follow-up through the other instance right after the Redis
            # restart, before its issuer's affinity record is back, once reached the wrong
            # system here; routing.fallbacks fixed it (tests/proxy/test_routing.py has the table).
            "redis-restart,router-restart",
            "--json",
            str(out),
        )
    doc = orjson.loads(out.read_text())
    check_passed(result, doc)
    assert str(doc["store"]).startswith("redis-server pid")
    assert doc["inject"] == ["redis-restart", "router-restart"]
    faults = doc["faults"]
    assert isinstance(faults, list)
    assert any("router 2 restarted" in f for f in faults)
    assert any("redis-server restarted" in f for f in faults)
    assert "upgrade | step 5/6 drain the old system: ok" in result.stdout


@pytest.mark.timeout(170)
def test_drill_on_the_in_process_store(tmp_path: Path) -> None:
    result = drill("--duration", "3", "--rate", "6", "--memory", "--json", "-")
    start = result.stdout.index("{\n")
    doc = orjson.loads(result.stdout[start:])
    check_passed(result, doc)
    assert str(doc["store"]).startswith("in-process memory://")


def test_drill_bad_input_is_one_line() -> None:
    for args, words in (
        (("--inject", "meteor"), "unknown fault 'meteor'"),
        (("--duration", "0"), "must be greater than 0"),
        (("--memory", "--inject", "redis-restart"), "needs redis-server"),
    ):
        result = drill(*args)
        assert result.returncode == 2, result
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr


@pytest.mark.timeout(170)
def test_drill_target_gateway_failing_aborts_the_rollout(tmp_path: Path) -> None:
    out = tmp_path / "drill.json"
    result = drill("--duration", "4", "--rate", "6", "--inject", "gateway-fail", "--json", str(out))
    doc = orjson.loads(out.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert doc["passed"] is True and doc["upgrade_exit"] == 4
    assert "failed its health probe" in str(doc["rollout_aborted"])
    assert doc["failed_total"] == 0 and doc["wrong_system"] == 0 and doc["wrong_bytes"] == 0
    steps = doc["steps"]
    assert isinstance(steps, list) and steps[-1]["step"] == "switch"
    assert steps[-1]["result"] == "aborted"
    assert "rollout aborted automatically:" in result.stdout


@pytest.mark.timeout(170)
def test_drill_target_failing_after_promotion_is_undone_by_the_watch(tmp_path: Path) -> None:
    out = tmp_path / "drill.json"
    result = drill(
        "--duration",
        "4",
        "--rate",
        "10",
        "--inject",
        "gateway-fail-after-promotion",
        "--json",
        str(out),
    )
    doc = orjson.loads(out.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert doc["passed"] is True and doc["upgrade_exit"] == 4
    undone = str(doc["undone_by_watch"])
    assert undone.startswith("the post-switch watch undid a -> b: failed share ")
    assert doc["failed_after_undo"] == 0 and doc["rollout_aborted"] is None
    assert doc["failed_total"] == 0 and doc["wrong_system"] == 0 and doc["wrong_bytes"] == 0
    assert doc["provoked_by_fault"]["token"] >= 1  # the watch measured them, then undid
    assert " token requests failed (" in undone and "before the switch" in undone
    steps = doc["steps"]
    assert [s["step"] for s in steps] == ["preflight", "smoke", "switch", "watch"]
    assert steps[-1]["result"] == "aborted"
    assert "undone by the post-switch watch:" in result.stdout
    assert "new sessions failed after the undo: 0" in result.stdout


def test_the_two_gateway_faults_exclude_each_other() -> None:
    with pytest.raises(UsageError, match="choose one"):
        check_inject(["gateway-fail,gateway-fail-after-promotion"])


@pytest.mark.timeout(120)
def test_ctrl_c_ends_the_drill_at_once_and_leaves_nothing_running() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "drill", "--duration", "60", "--rate", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    seen = []
    redis_pid = 0
    for line in proc.stdout:
        seen.append(line)
        if "store redis-server pid" in line:
            redis_pid = int(line.split("pid ")[1].split()[0])
        if "step 1/6 preflight: started" in line:
            break
    assert redis_pid, "".join(seen)
    proc.send_signal(signal.SIGINT)
    # Long before the traffic's 60 s would end (48 s from here): it stops at once.
    out, err = proc.communicate(timeout=40)
    assert proc.returncode == 130, "".join(seen) + out + err
    assert "drill: interrupted (Ctrl-C)" in err
    assert "verdict" not in out
    with pytest.raises(ProcessLookupError):
        os.kill(redis_pid, 0)  # its private redis-server is stopped (and reaped)
