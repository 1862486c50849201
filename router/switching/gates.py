"""The safety gates of every switch (SPEC section 6), in one place.

`check_target` is the pure decision, used by the CLI, the API, the page, `undo`, rollout
start and promotion alike: the target is not offline and its gateway answered a health probe
within the last few seconds. The process's one gateway prober (systems/prober.py) supplies
that probe: a recent answer, or one now (`GatewayProber.fresh`), the same probe the page
shows.

A refusal is a `GateRefused` naming the gate; `force` lets everything but the compare-and-set
(`expect`, checked atomically by the store's script) through, and the audit records it.

Past the gates, the target's client libraries are fingerprinted now (`Gates.fingerprint`,
given by whoever can: the router's release service, `releases refresh` in a CLI process), so
the release every router hands out for it is the one it serves at the switch, not the one
of the last periodic check. A failed fingerprint is logged, never a refusal: the routers keep
serving what they hold (fail-static), and the health gate already covers a dead gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from router.errors import BadRequest, GateRefused
from router.systems.prober import GatewayProber, Probe

log = logging.getLogger("router.gates")

# Fingerprints one system's libraries now and stores the release: "" or why not.
Fingerprint = Callable[[str], Awaitable[str]]


def known_target(target: object, known: tuple[str, ...]) -> str:
    """An unknown system is bad input (400 / exit 2), not a gate."""
    if not isinstance(target, str) or target not in known:
        raise BadRequest(f"unknown system {target!r}; configured systems: {', '.join(known)}")
    return target


def check_target(
    target: str, offline: frozenset[str], probe: Probe | None, now: float, max_age: float
) -> list[GateRefused]:
    """Every gate `target` fails, in order (empty: it may become active)."""
    refused = []
    if target in offline:
        refused.append(
            GateRefused(
                "offline",
                f"{target} is marked offline; bring it online first "
                "(force brings it online and switches)",
                system=target,
            )
        )
    if probe is None or not probe.ok or now - probe.at > max_age:  # at > now: probed for it
        why = "it was not probed" if probe is None else probe.error or "no recent answer"
        refused.append(
            GateRefused(
                "health",
                f"{target}'s gateway did not answer a health probe: {why}",
                system=target,
            )
        )
    return refused


def check_offline(
    system: str, open_count: int | None, source: str, unknown_why: str = ""
) -> list[GateRefused]:
    """Marking `system` offline answers everything that still belongs to it with 503 at
    once: refused while it holds calls, or while nobody can tell (the same gate on the CLI,
    the API and the page, which says the count in its dialog)."""
    if open_count == 0:
        return []
    if open_count is None:
        why = f" ({unknown_why})" if unknown_why else ""
        message = (
            f"{system}'s open sessions are unknown{why}: marking it offline could cut calls "
            f"that are still open; wait until `drain-wait {system}` says drained"
        )
    else:
        message = (
            f"{system} still holds {open_count} open session(s) and short code(s) "
            f"({source} count): marking it offline answers them with 503 at once; wait "
            f"until `drain-wait {system}` says drained"
        )
    return [GateRefused("open", message, system=system)]


def enforce(refusals: list[GateRefused], force: bool) -> str:
    """Raise the first refusal unless forced; return what force overrode (for the audit)."""
    if not refusals:
        return ""
    if not force:
        raise refusals[0]
    return "; ".join(f"{r.gate}: {r.message}" for r in refusals)


@dataclass(frozen=True, slots=True)
class Gates:
    """What a switch needs besides the store: the prober for the health gate and, past the
    gates, the fingerprint of the target's libraries (None: this process cannot)."""

    prober: GatewayProber
    fingerprint: Fingerprint | None = None

    async def fingerprint_now(self, system: str) -> str:
        """The target's libraries fingerprinted now, when this process can: "" or why not."""
        if self.fingerprint is None:
            return ""
        try:
            error = await self.fingerprint(system)
        except Exception as exc:  # a release check must never stop a switch
            error = f"{exc.__class__.__name__}: {exc}"
        if error:
            log.warning("could not fingerprint %s's libraries before the switch: %s", system, error)
        return error
