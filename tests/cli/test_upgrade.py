"""`token-router upgrade` against simulated systems, a real Redis and routers on sockets.

The command runs as a real process (exit statuses, stdin, Ctrl-C); the routers run in the
test's event loop, so the test awaits the process instead of blocking on it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from router import cancellation
from router.config import load_config
from router.state.keys import Keys
from router.state.redis_store import RedisStore
from router.upgrade.checks import default_router_url
from router.upgrade.context import Options
from router.upgrade.journal import open_journal
from router.upgrade.plan import UpgradeRecord, loads_record
from router.upgrade.procedure import Procedure
from tests.helpers import (
    HOST,
    SESSION_BODY,
    SESSION_PATH,
    Gateway,
    RedisServer,
    RouterFactory,
    RunningRouter,
    free_port,
    router_data,
    wait_until,
    write_toml,
)

ENV = {k: v for k, v in os.environ.items() if not k.startswith("TOKENROUTER_")}


def upgrade_data(redis_server: RedisServer, gateways: dict[str, Gateway]) -> dict[str, Any]:
    data = router_data(
        redis_server.url,
        gateways,
        preview_secret="test-preview-secret",
        heartbeat_interval=0.2,
        rollout_tick=0.1,
        leader_ttl=0.6,
        gate_probe_age=0.001,
    )
    del data["router"]["release_paths"]  # the upgrade checks the stored releases
    for name, gw in gateways.items():
        data["systems"][name]["public_url"] = gw.url  # reachable: a TCP check
    return data


@pytest.fixture
async def setup(
    tmp_path: Path,
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
    routers: RouterFactory,
) -> AsyncIterator[tuple[Path, RunningRouter, RedisStore]]:
    path = write_toml(tmp_path / "router.toml", upgrade_data(redis_server, gateways))
    router = await routers(load_config(path, {}))
    # The router config binds port 0: tell the command where the proxy listens.
    path.write_text(
        path.read_text().replace(f'listen = "{HOST}:0"', f'listen = "{router.proxy_url[7:]}"', 1)
    )
    # The first check fetches and compresses both releases: generous, for a loaded machine.
    await wait_until(lambda: router.server.runtime.releases.view.release_of("b") is not None, 90)
    store = RedisStore(redis_server.url, Keys("tokenrouter"), keyspace_events=False)
    try:
        yield path, router, store
    finally:
        await store.close()


async def upgrade(
    config: Path, *args: str, stdin: bytes | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "upgrade",
        *args,
        "--config",
        str(config),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin or b""), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def state_of(store: RedisStore) -> tuple[str | None, frozenset[str], int]:
    stored = await store.read_state()
    return stored.active, stored.offline, len(await store.audit(100))


async def record_of(store: RedisStore) -> UpgradeRecord | None:
    raw = await store._client.get("tokenrouter:upgrade")
    return loads_record(None if raw is None else str(raw))


async def mint(http: aiohttp.ClientSession, router: RunningRouter) -> str:
    async with http.post(router.proxy_url + SESSION_PATH, data=orjson.dumps(SESSION_BODY)) as r:
        assert r.status == 200
        return str((await r.json())["sessionid"])


async def test_upgrade_runs_every_step_and_audits_them(
    setup: tuple[Path, RunningRouter, RedisStore],
) -> None:
    config, router, store = setup
    code, out, err = await upgrade(config, "b", "--yes", "--offline-old", "--steps", "100")
    assert code == 0, out + err
    for n, title in enumerate(
        [
            "preflight",
            "preview smoke test",
            "switch new sessions",
            "watch the new system",
            "drain the old system",
            "take the old system offline",
        ],
        start=1,
    ):
        assert f"step {n}/6 {title}: started" in out
        assert f"step {n}/6 {title}: ok in" in out
    assert "[ok  ] gateway healthy" in out
    assert "[ok  ] release stored: release " in out
    assert (
        "[ok  ] urlSchemeDetails: names " + str(router.server.config.systems["b"].public_url) in out
    )
    assert "[ok  ] library /v/ path" in out and "identical" in out
    assert "upgrade done: new sessions go to b; a is offline" in out
    active, offline, _ = await state_of(store)
    assert (active, offline) == ("b", frozenset({"a"}))
    actions = [e.action for e in reversed(await store.audit(50))]
    for step in ("start", "preflight", "smoke", "switch", "watch", "drain", "offline", "done"):
        assert f"upgrade-{step}" in actions
    assert actions.count("switch") >= 1 and "offline" in actions
    await wait_until(lambda: router.active == "b")
    # Running it again: nothing to do, exit 0.
    code, out, _ = await upgrade(config, "b", "--yes")
    assert code == 0 and "already done" in out


async def test_dry_run_checks_and_changes_nothing(
    setup: tuple[Path, RunningRouter, RedisStore],
) -> None:
    config, _, store = setup
    before = await state_of(store)
    code, out, err = await upgrade(config, "b", "--dry-run")
    assert code == 0, out + err
    assert "plan: 1. preflight; 2. preview smoke test; 3. switch new sessions" in out
    assert "dry run: every check passed; nothing was changed" in out
    assert "[ok  ] routers agree" in out
    assert await state_of(store) == before
    assert await store._client.get("tokenrouter:upgrade") is None


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("c", "--yes"), 2, "unknown system 'c'"),
        (("a", "--yes"), 2, "already the active system"),
        (("b",), 2, "no terminal to confirm the switch on; pass --yes"),
        (("b", "--steps", "5,50"), 2, "the last step must be 100"),
    ],
)
async def test_bad_input_is_one_line_and_changes_nothing(
    setup: tuple[Path, RunningRouter, RedisStore], args: tuple[str, ...], code: int, words: str
) -> None:
    config, _, store = setup
    before = await state_of(store)
    got, out, err = await upgrade(config, *args)
    assert got == code, out + err
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert await state_of(store) == before


async def test_offline_target_and_concurrent_upgrade_are_gates(
    setup: tuple[Path, RunningRouter, RedisStore],
) -> None:
    config, _, store = setup
    await store.set_offline("b", True, "test")
    before = await state_of(store)
    code, _, err = await upgrade(config, "b", "--yes")
    assert code == 3 and "gate: offline" in err
    assert await state_of(store) == before
    await store.set_offline("b", False, "test")
    # Someone else drives an upgrade right now (fresh heartbeat).
    import time

    busy = (
        '{"id": "x", "target": "b", "old": "a", "offline_old": false, "state": "running", '
        f'"step": "smoke", "started": {time.time()}, "started_by": "other", '
        f'"owner": "elsewhere:1", "beat": {time.time() + 30}}}'
    )
    await store._client.set("tokenrouter:upgrade", busy)
    before = await state_of(store)
    code, _, err = await upgrade(config, "b", "--yes")
    assert code == 3 and "an upgrade to b is running (driven by elsewhere:1" in err
    assert await state_of(store) == before


async def test_failed_check_stops_before_switching(
    setup: tuple[Path, RunningRouter, RedisStore],
    redis_server: RedisServer,
    gateways: dict[str, Gateway],
) -> None:
    config, _, store = setup
    # b's public_url answers nothing: browsers could not open their WebSockets there.
    text = config.read_text().replace(
        f'public_url = "{gateways["b"].url}"', f'public_url = "https://{HOST}:{free_port()}"'
    )
    config.write_text(text)
    code, out, err = await upgrade(config, "b", "--yes")
    assert code == 3, out + err
    assert "[FAIL] public_url reachable: TLS handshake with" in out
    assert "upgrade stopped at step 1 (preflight)" in err
    assert "nothing was switched: a is still active" in err
    assert (await store.read_state()).active == "a"
    record = await record_of(store)
    assert record is not None and (record.state, record.step) == ("stopped", "preflight")


async def test_tls_handshake_with_the_public_url(
    setup: tuple[Path, RunningRouter, RedisStore], tmp_path: Path, gateways: dict[str, Gateway]
) -> None:
    config, _, _ = setup
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, HOST, 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    text = config.read_text().replace(
        f'public_url = "{gateways["b"].url}"',
        f'public_url = "https://{HOST}:{port}"\nca_file = "{cert}"',
    )
    config.write_text(text)
    try:
        code, out, err = await upgrade(config, "b", "--dry-run")
    finally:
        server.close()
    assert "[ok  ] public_url reachable: TLS" in out and "certificate verified" in out, out + err


async def test_interrupted_drain_resumes_from_redis(
    setup: tuple[Path, RunningRouter, RedisStore],
) -> None:
    config, router, store = setup
    async with aiohttp.ClientSession() as http:
        sid = await mint(http, router)  # a holds one call: the drain waits for it
        proc = await start_upgrade(config, "--steps", "100")
        seen = await read_until(proc, b"a: draining, 1 open")
        proc.send_signal(signal.SIGINT)
        rest, stopped = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 130, (seen + rest + stopped).decode()
        assert b"upgrade stopped at step 5 (drain): interrupted" in stopped
        assert b"resume: token-router upgrade b" in stopped
        assert b"roll back: token-router switch a" in stopped
        record = await record_of(store)
        assert record is not None and (record.state, record.step) == ("stopped", "drain")
        assert (await store.read_state()).active == "b"

        # The drain times out while the call is open: exit 1, still resumable.
        code, out, err = await upgrade(config, "b", "--yes", "--drain-timeout", "1")
        assert code == 1, out + err
        assert "resuming: b is active; following its watch, then waiting for a to drain" in out
        assert "step 1/6" not in out  # no re-check, no second switch
        assert "a still holds calls after 1 s" in err

        async with http.delete(router.proxy_url + f"{SESSION_PATH}/id/{sid}") as resp:
            assert resp.status == 204
        code, out, err = await upgrade(config, "b", "--yes", "--offline-old")
    assert code == 0, out + err
    assert "resuming: b is active; following its watch, then waiting for a to drain" in out
    assert "step 5/6 drain the old system: ok" in out and "step 6/6" in out
    entries = await store.audit(100)
    actions = [e.action for e in entries]
    assert [e.to for e in entries if e.action == "switch"].count("b") == 1  # never twice
    assert "upgrade-resume" in actions and "upgrade-stopped" in actions


async def test_a_ctrl_c_whose_cancel_was_lost_still_stops_the_drain(
    setup: tuple[Path, RunningRouter, RedisStore],
) -> None:
    # In-process, so the interrupt can be recorded without the cancel that normally comes
    # with it: what is left when Python 3.11's wait_for (inside redis-py) swallows the cancel
    # (tests/test_cancellation.py reproduces that swallow). The drain must still stop, with
    # the journal marked and the way on printed.
    path, router, store = setup
    config = load_config(path, {})
    r = config.router
    journal = open_journal(r.redis_url, Keys(r.key_prefix), timeout=r.redis_timeout)
    lines: list[str] = []
    draining = asyncio.Event()

    def out(line: str) -> None:
        lines.append(line)
        if "draining, 1 open" in line:
            draining.set()

    options = Options(
        target="b",
        source="test",
        routers=(default_router_url(config),),
        steps=(100,),
        drain_interval=30.0,  # a poll far away: only the interrupt can end this wait soon
        yes=True,
    )
    procedure = Procedure(config, store, journal, options, out=out, err=out, confirm=None)
    interrupt = cancellation.Interrupt()
    async with aiohttp.ClientSession() as http:
        await mint(http, router)  # a holds one call: the drain waits for it
        task = asyncio.create_task(cancellation.guard(procedure.run(), interrupt))
        try:
            await asyncio.wait_for(draining.wait(), 60)
            interrupt.request()  # recorded; task.cancel() never called
            # asyncio.wait, not wait_for: a bound that cancels the task would end it the
            # normal way and hide a drain that never looked at the recorded interrupt.
            done, _ = await asyncio.wait({task}, timeout=20)
            assert task in done, "the drain did not stop on the recorded Ctrl-C"
            assert isinstance(task.exception(), cancellation.Interrupted)
        finally:
            task.cancel()
            await journal.close()
    said = "\n".join(lines)
    assert "upgrade stopped at step 5 (drain): interrupted" in said, said
    assert "resume: token-router upgrade b" in said
    record = await record_of(store)
    assert record is not None and (record.state, record.step) == ("stopped", "drain")


async def at_the_prompt(config: Path, *args: str) -> tuple[asyncio.subprocess.Process, int, bytes]:
    """`upgrade b` with a terminal on stdin (a pty), read up to its confirmation question:
    the process, the pty's master end (the caller answers and closes it), what it printed."""
    import pty

    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "upgrade",
        "b",
        *args,
        "--config",
        str(config),
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    os.close(slave)
    assert proc.stdout is not None
    seen = b""
    try:
        while b"[y/N]" not in seen:
            chunk = await asyncio.wait_for(proc.stdout.read(200), 30)
            assert chunk, seen.decode()
            seen += chunk
    except BaseException:
        os.close(master)
        proc.kill()
        raise
    return proc, master, seen


async def test_declined_confirmation_switches_nothing(
    setup: tuple[Path, RunningRouter, RedisStore],
) -> None:
    config, _, store = setup
    proc, master, seen = await at_the_prompt(config)
    try:
        os.write(master, b"n\n")
        rest, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        os.close(master)
    assert proc.returncode == 3, (seen + rest + err).decode()
    assert "not confirmed; nothing was switched" in err.decode()
    assert (await store.read_state()).active == "a"


async def test_ctrl_c_at_the_confirmation_ends_at_once(
    setup: tuple[Path, RunningRouter, RedisStore],
) -> None:
    # The prompt's read blocks a thread on the terminal; Ctrl-C must not wait for a line.
    config, _, store = setup
    proc, master, seen = await at_the_prompt(config, "--steps", "100")
    try:
        proc.send_signal(signal.SIGINT)
        rest, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        os.close(master)
    assert proc.returncode == 130, (seen + rest + err).decode()
    assert b"upgrade stopped at step 3 (switch): interrupted" in err
    assert (await store.read_state()).active == "a"


async def test_an_interval_the_rollout_would_refuse_is_a_usage_error_up_front(
    setup: tuple[Path, RunningRouter, RedisStore],
) -> None:
    config, _, store = setup
    code, out, err = await upgrade(config, "b", "--yes", "--steps", "50,100", "--interval", "0.5")
    assert code == 2, out + err
    assert "argument --interval: 0.5 s is outside 1..604800 s" in err
    assert "step 1/" not in out  # refused before any step ran
    assert (await store.read_state()).active == "a"


async def test_upgrade_key_of_the_wrong_type_is_named_with_its_fix(
    setup: tuple[Path, RunningRouter, RedisStore],
) -> None:
    config, _, store = setup
    await store._client.lpush("tokenrouter:upgrade", "x")
    code, _, err = await upgrade(config, "b", "--yes")
    assert code == 2, err
    assert "Redis key 'tokenrouter:upgrade' holds a list" in err
    assert "redis-cli DEL tokenrouter:upgrade" in err and "Traceback" not in err
    assert (await store.read_state()).active == "a"


async def start_upgrade(config: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "upgrade",
        "b",
        "--yes",
        *args,
        "--config",
        str(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=ENV,
    )


async def read_until(proc: asyncio.subprocess.Process, words: bytes) -> bytes:
    assert proc.stdout is not None
    seen = b""
    while words not in seen:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, seen.decode()
        seen += line
    return seen


async def test_interrupted_mid_rollout_and_resumed(
    setup: tuple[Path, RunningRouter, RedisStore],
) -> None:
    config, router, store = setup
    # A step interval no run of this test reaches: the rollout must still be running when the
    # command is run again, however slow the machine (with 1.5 s, a loaded machine started
    # the second command after the promotion, and it resumed at the drain instead).
    proc = await start_upgrade(config, "--steps", "50,100", "--interval", "600")
    await read_until(proc, b"rollout step 1/2: 50 %")
    proc.send_signal(signal.SIGINT)
    _, stopped = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130
    assert b"upgrade stopped at step 3 (switch)" in stopped
    assert b"the rollout goes on in the routers" in stopped
    record = await record_of(store)
    assert record is not None and record.state == "stopped" and record.rollout_id
    # The routers keep driving it; running the command again watches it to the end.
    resumed = await start_upgrade(config, "--steps", "50,100", "--interval", "600")
    seen = await read_until(resumed, b"resuming: the rollout to b is running; watching it")
    # An operator promotes it from another terminal; the watching command follows to the end.
    promote = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "rollout", "promote", "--config", str(config), env=ENV
    )
    assert await asyncio.wait_for(promote.wait(), 60) == 0
    rest, err_bytes = await asyncio.wait_for(resumed.communicate(), 60)
    code, out, err = resumed.returncode, (seen + rest).decode(), err_bytes.decode()
    assert code == 0, out + err
    assert "step 1/6" not in out
    assert "rollout promoted: b active" in out
    assert "step 5/6 drain the old system: ok" in out
    assert (await store.read_state()).active == "b"
    starts = [e for e in await store.audit(100) if e.action == "rollout-start"]
    assert len(starts) == 1  # resumed, never started twice


async def test_automatic_abort_exits_4_and_keeps_the_old_system(
    setup: tuple[Path, RunningRouter, RedisStore], gateways: dict[str, Gateway]
) -> None:
    config, router, store = setup
    proc = await start_upgrade(config, "--steps", "50,100", "--interval", "30")
    await read_until(proc, b"rollout step 1/2: 50 %")
    gateways["b"].state.set_failure(500, None)  # b's gateway breaks during the rollout
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 4, (out + err).decode()
    assert b"rollout aborted: b's gateway failed its health probe" in out
    assert b"upgrade rolled back: the rollout aborted" in err
    assert (await store.read_state()).active == "a"
    record = await record_of(store)
    assert record is not None and record.state == "rolled-back"
    actions = [e.action for e in await store.audit(100)]
    assert "upgrade-rolled-back" in actions and "rollout-abort" in actions
    # Once b is fixed a new upgrade starts afresh.
    gateways["b"].state.set_failure(None, None)
    code, out_text, err_text = await upgrade(config, "b", "--dry-run")
    assert code == 0, out_text + err_text
    assert "upgrade a -> b" in out_text


async def test_another_rollout_running_is_a_gate(
    setup: tuple[Path, RunningRouter, RedisStore],
) -> None:
    config, _, store = setup
    started = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "rollout",
        "start",
        "b",
        "--steps",
        "10,100",
        "--interval",
        "60",
        "--config",
        str(config),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await started.communicate()
    assert started.returncode == 0, (out + err).decode()
    before = await state_of(store)
    code, _, err_text = await upgrade(config, "b", "--yes")
    assert code == 3 and "gate: busy" in err_text and "a rollout to b is running" in err_text
    assert await state_of(store) == before
