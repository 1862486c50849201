"""Ctrl-C reaches a polling loop even when a lower layer swallows the cancel.

The swallow is reproduced deterministically: a task waits in `asyncio.wait_for` (as redis-py
does around every command) on a future that completes in the same loop iteration as the
cancel. On Python 3.11 `wait_for` then returns the result and the cancel is lost; the loop
must still end at its next `cancellation.sleep`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from router import cancellation

BOUND = 10.0  # generous: these end in milliseconds when right


async def _poll_until_stopped(
    futures: asyncio.Queue[asyncio.Future[int]], sleep_with: str, rounds: list[int]
) -> None:
    """The upgrade's waiting loops in small: a store call, then a pause between polls."""
    while True:
        fut = await futures.get()
        rounds.append(await asyncio.wait_for(fut, 30))
        if sleep_with == "interrupts":
            await cancellation.sleep(0.05)
        else:
            await asyncio.sleep(0.05)


async def _swallow_once(sleep_with: str) -> tuple[asyncio.Task[None], list[int]]:
    loop = asyncio.get_running_loop()
    futures: asyncio.Queue[asyncio.Future[int]] = asyncio.Queue()
    rounds: list[int] = []
    task = asyncio.create_task(_poll_until_stopped(futures, sleep_with, rounds))
    fut: asyncio.Future[int] = loop.create_future()
    await futures.put(fut)
    # Until the task is suspended inside wait_for: no public API tells, and the reproduction
    # needs the reply and the cancel to land in exactly that state.
    while task._fut_waiter is None:  # type: ignore[attr-defined]
        await asyncio.sleep(0)
    # The reply arrives and Ctrl-C is pressed in the same iteration of the loop.
    fut.set_result(1)
    task.cancel()
    # Keep feeding replies so a loop that lost the cancel visibly carries on.
    for n in range(2, 6):
        nxt: asyncio.Future[int] = loop.create_future()
        nxt.set_result(n)
        await futures.put(nxt)
    return task, rounds


async def test_a_cancel_swallowed_by_wait_for_still_ends_the_loop() -> None:
    task, rounds = await _swallow_once("interrupts")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), BOUND)
    assert task.cancelled()
    assert rounds[:1] == [1] and len(rounds) <= 1


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12's wait_for keeps the cancel")
async def test_the_swallow_is_real_on_this_python() -> None:
    # Without cancellation.sleep the same loop ignores the cancel and keeps polling: the
    # failure the upgrade's Ctrl-C tests saw under load.
    task, rounds = await _swallow_once("asyncio")
    deadline = time.monotonic() + BOUND
    while len(rounds) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert rounds == [1, 2, 3, 4, 5] and not task.done()
    assert task.cancelling() == 1  # the request stays counted: what `check` looks at
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _ended(task: asyncio.Task[None]) -> None:
    # asyncio.wait, not wait_for: a bound that cancels the task would end it the normal way
    # (guard turns that cancel into Interrupted) and hide an interrupt nobody looked at.
    done, _ = await asyncio.wait({task}, timeout=BOUND)
    if task not in done:
        task.cancel()
        pytest.fail("the interrupt did not end the task")


async def test_a_recorded_interrupt_ends_sleep_at_once_without_any_cancel() -> None:
    interrupt = cancellation.Interrupt()
    started = asyncio.Event()

    async def sleep_long() -> None:
        started.set()
        await cancellation.sleep(3600)

    task = asyncio.create_task(cancellation.guard(sleep_long(), interrupt))
    await asyncio.wait_for(started.wait(), BOUND)
    interrupt.request()  # recorded, but the task is never cancelled (the cancel was lost)
    await _ended(task)
    assert isinstance(task.exception(), cancellation.Interrupted)


async def test_sigint_is_recorded_and_cancels_the_task() -> None:
    seen: list[bool] = []
    started = asyncio.Event()

    async def main() -> None:
        started.set()  # guard has installed its handler before it awaits this
        try:
            await asyncio.sleep(3600)
        finally:
            seen.append(cancellation.requested())

    task = asyncio.create_task(cancellation.guard(main()))
    await asyncio.wait_for(started.wait(), BOUND)
    os.kill(os.getpid(), signal.SIGINT)
    await _ended(task)
    assert isinstance(task.exception(), cancellation.Interrupted)
    assert seen == [True]
    assert not cancellation.requested()  # the record lives only inside guard


async def test_without_guard_nothing_is_requested() -> None:
    assert not cancellation.requested()
    cancellation.check()  # no interrupt, no cancel: nothing to raise
    await cancellation.sleep(0)


SLOW_CLEANUP = """
import asyncio, sys
from router.cli.common import run_async
from router import cancellation

async def main() -> int:
    try:
        print("ready", flush=True)
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        print("cleaning up", flush=True)
        await asyncio.sleep(3600)  # a cleanup that would never end
        raise
    return 0

try:
    sys.exit(run_async(cancellation.guard(main())))
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_a_second_ctrl_c_leaves_at_once_and_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLEANUP],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)  # the first: the cleanup starts
        assert proc.stdout.readline() == "cleaning up\n"
        proc.send_signal(signal.SIGINT)  # the second: out, cleanup or not
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err and "unhandled" not in err, err
