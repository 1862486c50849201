"""The drill's tally and report: plain data in, a terminal table and a JSON document out.

Three error counts decide the verdict (exit 0 only when all are 0):
- failed requests: an answer other than the one the request kind expects, or none;
- wrong system: a follow-up (token DELETE, short-code look-up) answered by another system
  than the one that issued the token or code, by the router's header or by the simulated
  systems' own records;
- wrong bytes: a library load through a URL the browser was given that returned another
  release's bytes.
Failures that an injected fault provokes on purpose (the target gateway failing during a
rollout, or after its promotion) are counted apart and do not fail the drill; the rollout's
abort, or the watch's undo with no new session failing after it, is the check.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

KINDS = (
    "token",
    "shortcode_create",
    "shortcode_lookup",
    "token_delete",
    "router_current",
    "library",
    "library_reload",
)
# What --inject can add. gateway-fail: the target fails during the rollout (it must abort);
# gateway-fail-after-promotion: it fails once promoted (the post-switch watch must undo).
FAULTS = ("redis-restart", "router-restart", "gateway-fail", "gateway-fail-after-promotion")
NEW_SESSIONS = ("token", "shortcode_create")
EXAMPLES = 5  # kept per error class, enough to start debugging from


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    provoked: Counter[str] = field(default_factory=Counter)  # failed by an injected fault
    wrong_system: int = 0
    wrong_bytes: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    per_system: Counter[str] = field(default_factory=Counter)  # new tokens per system
    # (kind, time.monotonic()) of every request that failed on purpose: after the watch's
    # undo no new session may fail any more.
    provoked_at: list[tuple[str, float]] = field(default_factory=list)

    def note(self, what: str, text: str) -> None:
        kept = self.examples.setdefault(what, [])
        if len(kept) < EXAMPLES:
            kept.append(text)

    def ok(self, kind: str) -> None:
        self.sent[kind] += 1

    def fail(self, kind: str, text: str, *, provoked: bool = False) -> None:
        self.sent[kind] += 1
        if provoked:
            self.provoked[kind] += 1
            self.provoked_at.append((kind, time.monotonic()))
            self.note("provoked", f"{kind}: {text}")
        else:
            self.failed[kind] += 1
            self.note("failed", f"{kind}: {text}")

    def wrong(self, text: str) -> None:
        self.wrong_system += 1
        self.note("wrong_system", text)

    def bad_bytes(self, text: str) -> None:
        self.wrong_bytes += 1
        self.note("wrong_bytes", text)

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def new_sessions_failed_after(self, moment: float) -> int:
        """Token and short-code creations that failed on purpose after `moment`."""
        return sum(1 for kind, t in self.provoked_at if kind in NEW_SESSIONS and t > moment)


@dataclass
class Step:
    step: str
    result: str
    seconds: float
    detail: str = ""


@dataclass
class Report:
    duration: float
    rate: float
    store: str
    routers: int
    inject: tuple[str, ...]
    tally: Tally
    steps: list[Step]
    upgrade_exit: int | None
    drain_seconds: float | None
    faults: list[str]
    expect_abort: bool = False  # the target gateway failed on purpose: a rollout must abort
    aborted: str = ""  # how the rollout ended, when it aborted
    expect_undo: bool = False  # the target failed after its promotion: the watch must undo
    undone: str = ""  # the watch's evidence, when it undid the switch
    # New sessions that failed on purpose after the undo was applied everywhere (plus the
    # answers already on their way): must be none.
    late_failures: int = 0

    @property
    def passed(self) -> bool:
        t = self.tally
        if t.failed_total or t.wrong_system or t.wrong_bytes:
            return False
        if self.expect_undo:
            return self.upgrade_exit == 4 and bool(self.undone) and self.late_failures == 0
        if self.expect_abort:
            return self.upgrade_exit == 4
        return self.upgrade_exit == 0

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_json(self) -> dict[str, Any]:
        t = self.tally
        return {
            "passed": self.passed,
            "duration": self.duration,
            "rate": self.rate,
            "store": self.store,
            "routers": self.routers,
            "inject": list(self.inject),
            "requests": {k: t.sent[k] for k in KINDS},
            "failed": {k: t.failed[k] for k in KINDS if t.failed[k]},
            "failed_total": t.failed_total,
            "provoked_by_fault": dict(t.provoked),
            "wrong_system": t.wrong_system,
            "wrong_bytes": t.wrong_bytes,
            "new_tokens_per_system": dict(t.per_system),
            "steps": [
                {
                    "step": s.step,
                    "result": s.result,
                    "seconds": round(s.seconds, 3),
                    "detail": s.detail,
                }
                for s in self.steps
            ],
            "upgrade_exit": self.upgrade_exit,
            "drain_seconds": None if self.drain_seconds is None else round(self.drain_seconds, 3),
            "rollout_aborted": self.aborted or None,
            "undone_by_watch": self.undone or None,
            "failed_after_undo": self.late_failures,
            "faults": self.faults,
            "examples": t.examples,
        }

    def table(self) -> list[str]:
        t = self.tally
        inject = ", ".join(self.inject) or "none"
        lines = [
            f"token-router drill: {self.duration:g} s of traffic at {self.rate:g} sessions/s; "
            f"store {self.store}; {self.routers} routers; faults injected: {inject}",
            "",
            f"{'REQUESTS':<18}{'SENT':>8}{'FAILED':>8}",
        ]
        for kind in KINDS:
            lines.append(f"{kind:<18}{t.sent[kind]:>8}{t.failed[kind]:>8}")
        lines.append(f"{'total':<18}{sum(t.sent.values()):>8}{t.failed_total:>8}")
        if t.provoked:
            lines.append(
                f"(failed on purpose by the injected gateway fault, not counted: "
                f"{sum(t.provoked.values())})"
            )
        per = ", ".join(f"{s} {n}" for s, n in sorted(t.per_system.items()))
        lines += [
            f"new tokens per system: {per or '-'}",
            "",
            f"failed requests            {t.failed_total}",
            f"follow-ups, wrong system   {t.wrong_system}",
            f"library loads, wrong bytes {t.wrong_bytes}",
            "",
            f"{'UPGRADE STEP':<14}{'RESULT':<9}{'SECONDS':>8}",
        ]
        for s in self.steps:
            lines.append(f"{s.step:<14}{s.result:<9}{s.seconds:>8.2f}")
        drain = "-" if self.drain_seconds is None else f"{self.drain_seconds:.2f} s"
        lines.append(f"drain time: {drain}; upgrade exit status: {self.upgrade_exit}")
        if self.undone:
            lines.append(f"undone by the post-switch watch: {self.undone}")
            lines.append(f"new sessions failed after the undo: {self.late_failures}")
        elif self.aborted:
            lines.append(f"rollout aborted automatically: {self.aborted}")
        if self.expect_undo and not self.undone:
            lines.append("the post-switch watch did NOT undo the switch")
        for fault in self.faults:
            lines.append(f"fault: {fault}")
        for what in ("failed", "wrong_system", "wrong_bytes"):
            for example in t.examples.get(what, []):
                lines.append(f"  e.g. {what}: {example}")
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"verdict: {verdict} (exit {self.exit_code})")
        return lines
