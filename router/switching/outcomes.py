"""What a guarded change did, as every surface renders it: the switch's outcome and which
live router instances confirmed it (operations.py makes them, the CLI, the API and the page
print or send them as they are)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Confirmation:
    """Which live instances applied a change (generation) and how long it took.

    `laggards` are every instance that was live while the change was confirmed and has not
    reported it applied, including those that fell silent meanwhile (`silent`): an instance
    that stops heartbeating is dropped from the registry after 3 beats, but it may still be
    routing on the old state (a frozen process), so the answer keeps naming it.
    """

    applied: int
    total: int
    elapsed_ms: float
    laggards: tuple[str, ...]
    timed_out: bool
    silent: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Every instance that was live applied it: only then is a change done."""
        return not self.laggards

    def text(self) -> str:
        if self.total == 0:
            return "no live router instance registered to confirm it"
        line = f"applied by {self.applied}/{self.total} instances in {self.elapsed_ms:.0f} ms"
        if self.laggards:
            line += f"; NOT applied by {', '.join(self.laggards)}"
        if self.silent:
            line += f" ({', '.join(self.silent)} stopped heartbeating meanwhile)"
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "total": self.total,
            "elapsed_ms": round(self.elapsed_ms, 1),
            "laggards": list(self.laggards),
            "silent": list(self.silent),
            "timed_out": self.timed_out,
            "complete": self.complete,
        }


@dataclass(frozen=True, slots=True)
class SwitchOutcome:
    previous: str
    active: str
    generation: int
    forced: str  # what force overrode ("" when nothing needed overriding)
    confirmation: Confirmation | None = None

    @property
    def changed(self) -> bool:
        return self.previous != self.active

    def text(self, verb: str = "switched") -> str:
        if not self.changed:
            line = f"{self.active} was already active; nothing changed"
        else:
            line = f"{verb} {self.previous or '(none)'} -> {self.active}"
        if self.confirmation is not None and self.changed:
            line += f"; {self.confirmation.text()}"
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "previous": self.previous or None,
            "changed": self.changed,
            "forced": self.forced or None,
            "confirmation": None if self.confirmation is None else self.confirmation.to_json(),
        }
