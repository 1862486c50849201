"""What one upgrade's steps share (`Context`): its options, output, the upgrade document
(read, written by compare-and-set, kept alive by a heartbeat) and the audit.

A Redis restart must not stop an upgrade: every store call goes through `patient`, which
retries while the store is briefly away and says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from router.config import Config
from router.errors import StoreUnavailable, WrongKeyType
from router.state import rollout as rollouts
from router.state.snapshot import Snapshot, build_snapshot
from router.state.store import StateStore
from router.switching.gates import Gates
from router.systems.prober import GatewayProber
from router.upgrade.journal import Journal
from router.upgrade.plan import (
    EXIT_REFUSED,
    Observed,
    RolloutFacts,
    UpgradeRecord,
    loads_record,
)

# This build has progressive rollouts (issue 10): step 3 is one unless --steps 100.
ROLLOUTS = True
# How long step 3 waits for every router to route to the target before it fails.
PROPAGATION_BOUND = 10.0
HEARTBEAT = 1.0
# A Redis restart must not stop an upgrade: store calls are retried for this long.
STORE_PATIENCE = 15.0

Confirm = Callable[[str], Awaitable[bool]]
T = TypeVar("T")


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Options:
    target: str
    source: str  # who, for the audit: "cli (user@host)" or "drill"
    routers: tuple[str, ...]  # proxy URLs to check and smoke-test through
    steps: tuple[int, ...] = (5, 25, 50, 100)
    interval: float = 120.0
    drain_timeout: float = 3600.0
    drain_interval: float = 2.0
    offline_old: bool = False
    dry_run: bool = False
    yes: bool = False
    me: str = field(default_factory=this_process)
    config_hint: str = ""  # ` --config <path>` for the commands printed as next steps


@dataclass
class StepTiming:
    step: str
    seconds: float
    result: str  # ok | failed | timeout | stopped | declined
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "seconds": round(self.seconds, 3),
            "result": self.result,
            "detail": self.detail,
        }


class StepFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Context:
    """What the steps of one upgrade share: its configuration, store, options, output, the
    upgrade document (read, written with compare-and-set, heartbeat) and the audit."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        journal: Journal,
        options: Options,
        *,
        out: Callable[[str], None],
        err: Callable[[str], None],
        confirm: Confirm | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.journal = journal
        self.options = options
        self.out = out
        self.err = err
        self.confirm = confirm
        self.timings: list[StepTiming] = []
        self.drain_seconds: float | None = None
        self.outcome = ""
        self.record: UpgradeRecord | None = None
        self._raw: str | None = None
        self._lock = asyncio.Lock()
        self.release = ""
        self.rolled_back = ""  # why the rollout aborted on its own, if it did
        # When this run began switching: the watch it follows is of a switch made since (a
        # resumed run follows the watch of the switch an earlier run made).
        self.switched_at = 0.0
        self.prober = GatewayProber(config.systems)
        self.gates = Gates(self.prober, fingerprint=self._fingerprint)

    async def _fingerprint(self, system: str) -> str:
        from router.releases.service import fingerprint_now

        return await fingerprint_now(self.config, system)

    # --- the document ------------------------------------------------------------------------

    async def patient(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, retried while Redis is briefly away (a restart, a failover)."""
        deadline = time.monotonic() + STORE_PATIENCE
        told = False
        while True:
            try:
                return await call()
            except StoreUnavailable as exc:
                if isinstance(exc, WrongKeyType) or time.monotonic() >= deadline:
                    raise  # a key of the wrong type is not transient: its fix is named
                if not told:
                    self.out(f"  ({what}: {exc}; retrying for up to {STORE_PATIENCE:g} s)")
                    told = True
                await asyncio.sleep(0.2)

    async def observe(self) -> Observed:
        return await self.patient("reading the state", self._observe_once)

    async def _observe_once(self) -> Observed:
        stored = await self.store.read_state()
        known = self.config.system_ids
        fallback = stored.recorded if stored.recorded in known else self.config.default_system
        assert fallback is not None
        snapshot: Snapshot = build_snapshot(stored, known, Snapshot(active=fallback), time.time())
        self._raw = await self.journal.read()
        r = rollouts.loads(stored.rollout)
        facts = None
        if r is not None:
            facts = RolloutFacts(r.id, r.target, r.source, r.state, r.end_reason or "")
        return Observed(
            known=tuple(known),
            active=snapshot.active,
            offline=snapshot.offline,
            record=loads_record(self._raw),
            rollout=facts,
            now=time.time(),
        )

    async def save(self, record: UpgradeRecord) -> None:
        async with self._lock:
            new = record.dumps()
            expected = self._raw
            written = await self.patient(
                "writing the upgrade document", lambda: self.journal.write(expected, new)
            )
            # A retried write whose first attempt landed finds its own value: that is success.
            raw = None if written else await self.patient("reading", self.journal.read)
            if not written and raw != new:
                current = loads_record(raw)
                who = current.owner if current is not None else "someone"
                raise StepFailed(
                    EXIT_REFUSED,
                    f"refused (gate: busy): the upgrade document changed meanwhile ({who} "
                    "wrote it); run the upgrade again to see the state",
                )
            self._raw = new
            self.record = record

    async def update(self, **changes: Any) -> None:
        assert self.record is not None
        await self.save(replace(self.record, beat=time.time(), **changes))

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            with contextlib.suppress(StoreUnavailable, StepFailed):
                await self.update()

    async def audit(self, action: str, reason: str) -> None:
        assert self.record is not None
        record = self.record
        try:
            await self.patient(
                "auditing",
                lambda: self.journal.audit(
                    action, self.options.source, record.old, record.target, reason
                ),
            )
        except StoreUnavailable as exc:
            self.out(f"  (could not audit {action}: {exc})")
