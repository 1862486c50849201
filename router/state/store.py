"""The state store's protocol and the plain records it speaks in.

Everything shared between router instances goes through a `StateStore`: the active system,
the offline set, affinity (who issued a token or short code), open-item counts for drain and
the audit stream. Every method raises `StoreUnavailable` when the store cannot answer; the
callers decide what fail-static means for them. Two implementations: `RedisStore`
(redis_store.py, with its atomic scripts in scripts.py) and `MemoryStore` (memory_store.py,
`memory://`); `open_store` (connect.py) picks one by URL, and refusals.py words their refusals.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from router.errors import BadRequest
from router.printable import printable
from router.state import rollout as rollout_model
from router.state.key_problems import KeyProblem, parse_counter, unusable_value
from router.state.keys import Keys

AUDIT_MAXLEN = 10_000
Change = Literal["subscribed", "event", "tick"]
# session: a token; code: a Live Assist short code; cid: a Live Assist correlation id
# learned from a short-code look-up answer (owned like its code, never counted as open).
AffinityKind = Literal["session", "code", "cid"]


@dataclass(frozen=True, slots=True)
class StoredState:
    """The dynamic state as read from the store, not yet validated against the config."""

    active: str | None
    offline: frozenset[str]
    recorded: str | None = None  # the last valid active value the audit stream recorded
    epoch: str | None = None  # '<id>:<time>' of this Redis lifetime (keys.Keys.epoch)
    restoring: float | None = None  # when routers last began writing back lost state
    rollout: str | None = None  # the rollout document (JSON) as stored, if any
    generation: int = 0  # bumped by every write through token-router (confirmations)
    offline_forced: str | None = None  # the active system token-router took offline (forced)
    # Keys that hold something token-router cannot use (the wrong kind of value, or a value
    # it cannot parse), each with its fix; and which of the fields above could therefore not
    # be read ("offline", "epoch", ...): their value here is the empty one, not the truth.
    problems: tuple[KeyProblem, ...] = ()
    unreadable: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SwitchResult:
    """What a switch did: the system active before (audit's view) and the new generation."""

    previous: str
    generation: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    time: float
    action: str
    source: str
    from_: str
    to: str
    reason: str = ""
    forced: bool = False

    def __post_init__(self) -> None:
        # Anyone who can write to Redis can append to the stream: whatever it holds is made
        # safe here, once, for every surface that shows it (CLI, API, page).
        for name in ("source", "from_", "to", "reason"):
            object.__setattr__(self, name, printable(getattr(self, name)))

    @classmethod
    def from_fields(cls, entry_id: str, data: Mapping[str, str]) -> AuditEntry:
        """An entry as the audit stream holds it (scripts.py's `audit` writes the fields)."""
        return cls(
            id=entry_id,
            # An entry added with redis-cli XADD may lack any field or hold anything.
            time=_finite(data.get("time")),
            action=data.get("action", "switch"),
            source=data.get("source", ""),
            from_=data.get("from", ""),
            to=data.get("to", ""),
            reason=data.get("reason", ""),
            forced=data.get("forced", "") == "1",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "action": self.action,
            "source": self.source,
            "from": self.from_,
            "to": self.to,
            "reason": self.reason or None,
            "forced": self.forced,
        }


@dataclass(frozen=True, slots=True)
class AffinityRecord:
    kind: AffinityKind
    ident: str
    system: str
    ttl: int  # seconds the owner is remembered
    open_ttl: int | None = None  # seconds it counts as open for drain (None: ttl)
    issuer: str = ""  # the router instance that issued it ("" once replayed from a cache)
    issued: float = 0.0  # when, Unix time (0: unknown)

    @property
    def counted(self) -> int:
        return self.ttl if self.open_ttl is None else self.open_ttl


@dataclass(frozen=True, slots=True)
class OpenItem:
    """One item a system holds open as the routers know it (`open-items`, drain)."""

    kind: AffinityKind
    ident: str
    expires: float  # when it stops counting as open, Unix time
    issuer: str = ""  # router instance that issued it, "" when unknown
    issued: float = 0.0  # Unix time, 0 when unknown

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.ident,
            "issued_at": self.issued or None,
            "issuer": self.issuer or None,
            "expires_at": self.expires,
        }


def issued_value(issuer: str, issued: float) -> str:
    return f"{issuer} {issued:.3f}"


def parse_issued(value: str | None) -> tuple[str, float]:
    """('<instance>', time) from a `Keys.issued` value; ("", 0.0) when absent or garbled."""
    issuer, _, when = (value or "").rpartition(" ")
    try:
        return issuer, float(when)
    except ValueError:
        return "", 0.0


@dataclass(frozen=True, slots=True)
class RolloutRestore:
    """A rollout document to put back into a Redis that lost it, with its audit entry."""

    document: str
    source: str
    from_: str
    to: str
    reason: str


@dataclass(frozen=True, slots=True)
class AuditFields:
    """One audit entry to write with a state change (the script writes time and id)."""

    action: str
    source: str
    from_: str = ""
    to: str = ""
    reason: str = ""
    forced: bool = False


class StateStore(Protocol):
    """What the router needs from shared state. `RedisStore` and `MemoryStore` implement it."""

    description: str

    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def read_state(self) -> StoredState: ...
    def changes(self, tick: float) -> AsyncIterator[Change]: ...
    async def restore(
        self,
        epoch: str,
        active: str,
        offline: Sequence[str],
        *,
        known: bool = False,
        rollout: RolloutRestore | None = None,
    ) -> tuple[str, bool]: ...
    async def mark_restoring(self, now: float) -> None: ...
    async def persistence(self) -> str: ...
    async def change_active(
        self,
        system: str,
        source: str,
        known: Sequence[str],
        *,
        expect: str | None = None,
        reason: str = "",
        forced: bool = False,
        action: str = "switch",
    ) -> SwitchResult: ...
    async def set_offline(
        self,
        system: str,
        offline: bool,
        source: str,
        *,
        reason: str = "",
        forced: bool = False,
        refuse_active: bool = False,
    ) -> None: ...
    async def write_rollout(
        self, expected: str | None, new: str | None, entry: AuditFields, *, expect_active: str = ""
    ) -> int: ...
    async def add_rollout_counts(
        self, rollout_id: str, step: int, deltas: Mapping[str, tuple[int, int]]
    ) -> None: ...
    async def rollout_counts(self, rollout_id: str, step: int) -> dict[str, tuple[int, int]]: ...
    async def add_traffic(self, slot: int, fields: Mapping[str, int], ttl: int) -> None: ...
    async def read_traffic(self, slots: Sequence[int]) -> list[dict[str, int]]: ...
    async def read_watch(self) -> str | None: ...
    async def write_watch(
        self, expected: str | None, new: str, entry: AuditFields | None = None
    ) -> None: ...
    async def hold_leader(self, instance: str, ttl: float) -> bool: ...
    async def leader(self) -> str | None: ...
    async def release_leader(self, instance: str) -> None: ...
    async def heartbeat(self, instance: str, document: Mapping[str, Any]) -> None: ...
    async def instances(self, now: float, stale_after: float) -> list[dict[str, Any]]: ...
    async def remove_instance(self, instance: str) -> None: ...
    async def record_observed(self, source: str, known: Sequence[str]) -> bool: ...
    async def record_offline_observed(self, source: str, active: str, known: Sequence[str]) -> int:
        """Audit once each change of the offline set made past token-router (redis-cli
        SADD/SREM), except a mark of `active` (a refused value); returns how many."""
        ...

    async def audit(
        self, count: int, *, before: str | None = None, since: float | None = None
    ) -> list[AuditEntry]:
        """Up to `count` entries, newest first; `before`: only entries older than this id (the
        next page), `since`: only entries written at or after this Unix time."""
        ...

    async def write_affinity(self, records: Sequence[AffinityRecord], now: float) -> None: ...
    async def affinity_entry(self, kind: AffinityKind, ident: str) -> tuple[str, float] | None: ...
    async def claim_affinity(self, record: AffinityRecord, now: float) -> str | None: ...
    async def release(self, kind: AffinityKind, ident: str, system: str) -> None: ...
    async def open_counts(self, systems: Sequence[str], now: float) -> dict[str, int]: ...
    async def open_items(
        self, system: str, now: float, limit: int
    ) -> tuple[int, list[OpenItem]]: ...
    async def mark_preview(self, system: str, ttl: int) -> None: ...
    async def revoke_session(self, nonce: str, ttl: int) -> None: ...
    async def session_revoked(self, nonce: str) -> bool: ...
    async def previewing(self, systems: Sequence[str]) -> frozenset[str]: ...


def _finite(value: str | None) -> float:
    try:
        number = float(value or 0.0)
    except ValueError:
        return 0.0
    return number if math.isfinite(number) else 0.0


def _float_or_none(value: str | None) -> float | None:
    try:
        number = None if value is None else float(value)
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def state_fields(k: Keys) -> dict[str, str]:
    """StoredState's fields read from Redis, and the key of each."""
    return {
        "active": k.active,
        "offline": k.offline,
        "recorded": k.recorded,
        "epoch": k.epoch,
        "restoring": k.restoring,
        "rollout": k.rollout,
        "generation": k.generation,
        "offline_forced": k.offline_forced,
    }


def decode_state(k: Keys, values: Mapping[str, Any], wrong: Sequence[KeyProblem]) -> StoredState:
    """The state from what Redis answered for `state_fields` (None for a key of the wrong
    kind, named in `wrong`): a value token-router cannot use is a problem too, its field read
    as absent, never an exception that stops the reader (issue 25)."""
    problems = list(wrong)
    unreadable = {name for name, key in state_fields(k).items() if key in {p.key for p in wrong}}
    generation = parse_counter(values["generation"])
    if generation is None:
        why = "not an integer counter; the next change through token-router restarts it"
        problems.append(unusable_value(k, k.generation, values["generation"], why))
        unreadable.add("generation")
    if (found := rollout_problem(k, values["rollout"])) is not None:
        problems.append(found)
        unreadable.add("rollout")
    return StoredState(
        active=values["active"],
        offline=frozenset(values["offline"] or ()),
        recorded=values["recorded"],
        rollout=values["rollout"],
        generation=generation or 0,
        epoch=values["epoch"],
        restoring=_float_or_none(values["restoring"]),
        offline_forced=values["offline_forced"],
        problems=tuple(problems),
        unreadable=frozenset(unreadable),
    )


def persistence_mode(appendonly: str | None, save: str | None) -> str:
    """'aof', 'rdb', 'aof+rdb', 'none', or 'unknown' (CONFIG GET refused or not answered)."""
    if appendonly is None or save is None:
        return "unknown"
    modes = []
    if appendonly.strip().lower() == "yes":
        modes.append("aof")
    if save.strip():
        modes.append("rdb")
    return "+".join(modes) or "none"


def split_instances(
    raw: Mapping[str, str | bytes], now: float, stale_after: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """(live heartbeat documents sorted by id, ids of stale or unreadable ones)."""
    live: list[dict[str, Any]] = []
    stale: list[str] = []
    for ident, value in raw.items():
        doc = _heartbeat(value, now, stale_after)
        if doc is None:
            stale.append(ident)
        else:
            live.append(doc)
    return sorted(live, key=lambda d: str(d.get("id"))), stale


# Seconds an instance's clock may run ahead of the reader's and its beat still count.
HEARTBEAT_SKEW = 3600.0


def _heartbeat(value: str | bytes, now: float, stale_after: float) -> dict[str, Any] | None:
    """A live instance's heartbeat document, or None when it is stale or was not written by
    a router (a stray `redis-cli HSET` is pruned like a dead instance)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        return None
    seen, applied = doc.get("seen"), doc.get("applied", {})
    if isinstance(seen, bool) or not isinstance(seen, int | float) or not math.isfinite(seen):
        return None
    if not isinstance(applied, dict):
        return None
    generation = applied.get("generation", 0)
    if isinstance(generation, bool) or not isinstance(generation, int):
        return None
    # Silent for too long, or "seen" further ahead than any host's clock drifts (a stray
    # document would otherwise stay live for ever and hold every confirmation up): not live.
    if not -HEARTBEAT_SKEW <= now - seen <= stale_after:
        return None
    return doc


def rollout_problem(keys: Keys, raw: str | None) -> KeyProblem | None:
    """The stored rollout document's problem, if it cannot be used (rollout.parse)."""
    if not raw:
        return None
    try:
        rollout_model.parse(raw)
    except BadRequest as exc:
        return unusable_value(keys, keys.rollout, raw, f"not a rollout document: {exc}")
    return None


def member(kind: AffinityKind, ident: str) -> str:
    """The member naming one affinity entry in a system's open-items set."""
    return f"{kind}:{ident}"


def parse_counts(raw: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """`<system>:requests` / `<system>:failures` fields -> {system: (requests, failures)}."""
    out: dict[str, tuple[int, int]] = {}
    for name, value in raw.items():
        system, _, what = name.rpartition(":")
        number = parse_counter(value)
        if number is None or number < 0 or what not in ("requests", "failures"):
            continue  # not written by a router (HINCRBY): a stray field is no count
        requests, failures = out.get(system, (0, 0))
        if what == "requests":
            requests = number
        else:
            failures = number
        out[system] = (requests, failures)
    return out
