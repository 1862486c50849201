"""`serve --workers N` killed with SIGKILL takes its workers with it: a worker must not serve
the shared port on its own (the same defect as a killed drill's children, issue 25 item 13)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from tests.drill.test_children import descendants, running
from tests.helpers import Gateway, RedisServer, RouterProcess, wait_ready
from tests.server.test_run import config_file


async def test_workers_die_with_a_killed_supervisor(
    tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway]
) -> None:
    path, _, admin = config_file(tmp_path, redis_server.url, gateways)
    router = RouterProcess(path, workers=2)
    router.start()
    workers: set[int] = set()
    try:
        await wait_ready(admin)
        assert router.proc is not None
        deadline = time.monotonic() + 30
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = descendants(router.proc.pid)
            time.sleep(0.05)
        assert len(workers) == 2, workers
        router.proc.kill()  # SIGKILL: the supervisor can stop nothing itself
        router.proc.wait(timeout=10)
        deadline = time.monotonic() + 60
        while any(running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if running(pid)], "workers outlived the supervisor"
    finally:
        for pid in workers:  # a failing run must not leave them to the next test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        router.kill()
