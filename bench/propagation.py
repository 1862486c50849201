"""Switch propagation: from a bare `SET <prefix>:active X` to every instance routing to X.

Each router instance is polled on its own kept-alive connection with `GET /router/current`
(answered from the instance's in-memory snapshot, never from Redis), from the SET until it
names the new system, one poll per millisecond at most; between switches nobody polls, so
the instances are idle when the SET arrives, as in production. The clock starts just before
the SET's bytes are written to an already-open Redis socket, and stops, per instance, at the
first answer naming the new system. Resolution: one poll round trip plus the 1 ms pause.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import orjson

from bench.loadgen import percentiles
from bench.resp import set_async

SWITCH_TIMEOUT = 2.0
SETTLE = 0.05  # pause between switches, so each one starts from a quiet system
# Between two polls of one instance that still answers the old system. The event loop's
# timers tick in milliseconds, so this is the resolution of the measurement (~1 ms).
POLL_INTERVAL = 0.001


@dataclass
class Switch:
    target: str
    started: float
    seen: dict[int, float] = field(default_factory=dict)
    complete: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Poller:
    index: int
    host: str
    port: int
    polls: int = 0
    errors: int = 0

    async def current(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> str | None:
        writer.write(b"GET /router/current HTTP/1.1\r\nHost: bench\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.polls += 1
        if not head.startswith(b"HTTP/1.1 200"):
            self.errors += 1
            return None
        system = orjson.loads(body).get("system")
        return system if isinstance(system, str) else None

    async def run(self, state: Propagation) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            while not state.finished:
                switch = state.switch
                if switch is None or self.index in switch.seen:
                    # Idle between switches: a router kept busy by polls would delay its
                    # own reaction (3 instances share one core), which is not what we measure.
                    await state.started.wait()
                    continue
                system = await self.current(reader, writer)
                now = time.perf_counter()
                if system == switch.target:
                    switch.seen[self.index] = now - switch.started
                    if len(switch.seen) == state.instances:
                        switch.complete.set()
                else:
                    await asyncio.sleep(POLL_INTERVAL)
        finally:
            writer.close()


@dataclass
class Propagation:
    instances: int
    switch: Switch | None = None
    finished: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def begin(self, switch: Switch) -> None:
        self.switch = switch
        self.started.set()
        self.started = asyncio.Event()


async def measure(
    redis_port: int,
    key: str,
    routers: list[tuple[str, int]],
    systems: tuple[str, str],
    count: int,
) -> dict[str, object]:
    """`count` alternating switches; per-switch time to the last instance, in ms."""
    state = Propagation(instances=len(routers))
    pollers = [Poller(i, host, port) for i, (host, port) in enumerate(routers)]
    reader, writer = await asyncio.open_connection("127.0.0.1", redis_port)
    tasks = [asyncio.create_task(p.run(state)) for p in pollers]
    last: list[float] = []
    each: list[float] = []
    timeouts = 0
    try:
        # Start from systems[0] everywhere, unmeasured.
        first = Switch(systems[0], time.perf_counter())
        state.begin(first)
        await set_async(writer, reader, "SET", key, systems[0])
        await asyncio.wait_for(first.complete.wait(), 5.0)
        for i in range(count):
            await asyncio.sleep(SETTLE)
            target = systems[(i + 1) % 2]
            switch = Switch(target, time.perf_counter())
            state.begin(switch)
            await set_async(writer, reader, "SET", key, target)
            try:
                await asyncio.wait_for(switch.complete.wait(), SWITCH_TIMEOUT)
            except TimeoutError:
                timeouts += 1
                continue
            last.append(max(switch.seen.values()))
            each.extend(switch.seen.values())
    finally:
        state.finished = True
        state.started.set()
        writer.close()
        done = await asyncio.wait(tasks, timeout=5)
        for task in done[1]:
            task.cancel()
    to_ns = [int(x * 1e9) for x in last]
    return {
        "switches": count,
        "instances": len(routers),
        "timeouts": timeouts,
        "last_instance_ms": percentiles(to_ns, (50, 99)),
        "any_instance_ms": percentiles([int(x * 1e9) for x in each], (50, 99)),
        "polls": sum(p.polls for p in pollers),
        "poll_errors": sum(p.errors for p in pollers),
    }
