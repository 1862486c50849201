"""The store's refusals in words an operator can act on, and the one reading of a script's.

The compare-and-set scripts (scripts.py) refuse a write with an error reply whose first word
names the refusal: `EXPECT <actual>`, `OFFLINE`, `ACTIVE`, `CHANGED`. `refusal` reads that
word, the whole word, once for every script; `MemoryStore` raises the same refusals directly,
so both stores say the same thing.
"""

from __future__ import annotations

from router.errors import Conflict, GateRefused, RouterError


def expect_error(actual: str, expected: str) -> GateRefused:
    """The compare-and-set refusal: the active system is `actual`, not `expected`."""
    actual = actual or "(none)"
    return GateRefused(
        "expect",
        f"the active system is {actual}, not {expected}: someone else changed it; "
        "look again (token-router status) and retry with the right --expect",
        system=actual,
        overridable=False,
    )


def active_error(system: str) -> GateRefused:
    return GateRefused(
        "active",
        f"{system} is the active system: marking it offline refuses every new session; "
        "switch to another system first",
        system=system,
    )


def offline_error(system: str) -> GateRefused:
    return GateRefused(
        "offline",
        f"system {system!r} is marked offline; bring it online before switching "
        "(or force, which brings it online)",
        system=system,
    )


ROLLOUT_CHANGED = "the rollout changed meanwhile; look again and retry"
WATCH_CHANGED = "the watch changed meanwhile; look again"


def changed_error(message: str = ROLLOUT_CHANGED) -> Conflict:
    """A compare-and-set of a whole document lost: it changed since it was read."""
    return Conflict(message)


def refusal(
    reply: str, *, system: str = "", expected: str = "", changed: str = ROLLOUT_CHANGED
) -> RouterError | None:
    """The refusal a script's error reply names, or None for any other error."""
    word, _, rest = reply.strip().partition(" ")
    if word == "EXPECT":
        return expect_error(rest.strip(), expected)
    if word == "OFFLINE":
        return offline_error(system)
    if word == "ACTIVE":
        return active_error(system)
    if word == "CHANGED":
        return changed_error(changed)
    return None
