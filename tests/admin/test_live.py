"""router/admin/feed.py: the admin page's live sampler under a shutdown that races it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from router.admin.feed import LiveFeed
from router.app_keys import LIVE
from router.runtime import Runtime
from router.store import MemoryStore
from router.wiring import wire
from tests.helpers import Gateway, make_config


class ClosedUnderTheRead(MemoryStore):
    """memory:// whose open-items read meets a transport closed by a shutdown that began
    while it was in flight (what uvloop raises when the Redis client closes under it)."""

    def __init__(self) -> None:
        super().__init__()
        self.runtime: Runtime | None = None
        self.shutdown_begins = True

    async def open_counts(self, systems: Sequence[str], now: float) -> dict[str, int]:
        if self.runtime is not None and self.shutdown_begins:
            self.runtime.stopping = True
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")


def feed_on(store: ClosedUnderTheRead, gateways: dict[str, Gateway]) -> LiveFeed:
    wired = wire(make_config("memory://", gateways), store)
    store.runtime = wired.runtime
    return wired.admin_app[LIVE]


async def test_a_trend_read_cut_by_shutdown_ends_quietly(gateways: dict[str, Gateway]) -> None:
    store = ClosedUnderTheRead()
    feed = feed_on(store, gateways)
    await feed.sample_trend()  # no exception: the task would die with a traceback on stderr
    assert all(len(points) == 0 for points in feed.trend.values())


async def test_the_same_error_outside_a_shutdown_is_not_hidden(
    gateways: dict[str, Gateway],
) -> None:
    store = ClosedUnderTheRead()
    store.shutdown_begins = False
    feed = feed_on(store, gateways)
    with pytest.raises(RuntimeError):
        await feed.sample_trend()
