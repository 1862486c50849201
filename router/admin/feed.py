"""The admin page's sampler: request rates of this process (the open-items trend is the
drain history, app_keys.DRAIN, sampled with every status).

It also wakes the event streams (live.py) on every change it is told about: a new state
snapshot, the store going away or coming back, a gateway turning (un)healthy.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from router.proxy.routing import Route
from router.runtime import Runtime

RATE_WINDOW = 10  # seconds of request counts a rate is computed over
TREND_POINTS = 60  # drain samples the page's sparkline shows
TOKEN_ROUTE = Route.TOKEN_CREATE.value


class LiveFeed:
    """Samples request rates and wakes event streams on changes."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        sample_every: float = 1.0,
    ) -> None:
        self.runtime = runtime
        # (route, system, status) -> requests this process served, counted by metrics.observe.
        self.requests = runtime.metrics.local
        self.sample_every = sample_every
        self.systems = runtime.config.system_ids
        self.counts: deque[tuple[float, dict[str, tuple[int, int]]]] = deque(
            maxlen=max(2, int(RATE_WINDOW / sample_every) + 1)
        )
        self.stopping = False
        self._changed = asyncio.Event()

    # --- change notification ---------------------------------------------------------

    def notify(self) -> None:
        """Wake every stream now; streams that were woken keep their wake-up."""
        self._changed.set()
        self._changed = asyncio.Event()

    def on_snapshot(self, previous: object, current: object) -> None:
        self.notify()

    def on_store_health(self, degraded: bool) -> None:
        self.notify()

    @property
    def changed(self) -> asyncio.Event:
        return self._changed

    # --- sampling ----------------------------------------------------------------------

    def totals(self) -> dict[str, tuple[int, int]]:
        """(token requests, all proxied requests) per system, since this process started."""
        out = {sid: (0, 0) for sid in self.systems}
        for (route, system, _status), n in list(self.requests.items()):
            token, every = out.get(system, (0, 0))
            out[system] = (token + (n if route == TOKEN_ROUTE else 0), every + n)
        return out

    def sample_counts(self, now: float) -> None:
        self.counts.append((now, self.totals()))

    def rates(self) -> dict[str, dict[str, float]]:
        """Requests per second per system over the sampled window (0 until two samples)."""
        if len(self.counts) < 2:
            return {sid: {"token": 0.0, "all": 0.0} for sid in self.systems}
        (t0, first), (t1, last) = self.counts[0], self.counts[-1]
        span = max(t1 - t0, 1e-6)
        out = {}
        for sid in self.systems:
            a, b = first.get(sid, (0, 0)), last.get(sid, (0, 0))
            out[sid] = {
                "token": round((b[0] - a[0]) / span, 2),
                "all": round((b[1] - a[1]) / span, 2),
            }
        return out

    async def run(self) -> None:
        """The sampler (admin app cleanup_ctx): request counts every second."""
        while True:
            self.sample_counts(time.monotonic())
            await asyncio.sleep(self.sample_every)
