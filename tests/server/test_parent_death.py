"""`serve --workers N` killed with SIGKILL takes its workers with it: a worker must not serve
the shared port on its own (the same defect as a killed drill's children, issue 25 item 13)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from tests.helpers import (
    START_TIMEOUT,
    Gateway,
    RedisServer,
    RouterProcess,
    wait_ready,
    wait_until,
)
from tests.sandbox.test_children import descendants, running
from tests.server.test_run import config_file


async def test_workers_die_with_a_killed_supervisor(
    tmp_path: Path, redis_server: RedisServer, gateways: dict[str, Gateway]
) -> None:
    # No stop delay, a short drain: a worker that got its SIGTERM is gone within seconds. An
    # orphan lives on (its own heartbeat and listeners), so the bound below tells them apart.
    path, _, admin = config_file(
        tmp_path, redis_server.url, gateways, stop_delay=0, shutdown_timeout=2
    )
    router = RouterProcess(path, workers=2)
    router.start()
    workers: set[int] = set()
    try:
        await wait_ready(admin)
        assert router.proc is not None
        supervisor = router.proc.pid

        def two_workers() -> bool:
            workers.update(descendants(supervisor))
            return len(workers) == 2

        await wait_until(two_workers, timeout=START_TIMEOUT)
        router.proc.kill()  # SIGKILL: the supervisor can stop nothing itself
        router.proc.wait(timeout=10)
        await wait_until(lambda: not any(running(pid) for pid in workers), timeout=30)
    finally:
        for pid in workers:  # a failing run must not leave them to the next test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        router.kill()
