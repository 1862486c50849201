"""The state of one simulated system: what it issued, what it was told, how it misbehaves.

Plain data and its answers (the monitoring documents), no I/O: the app (gateway.py) holds
one under `SIM_STATE`.
"""

from __future__ import annotations

import secrets
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.simulator.library import cached_library

# How many session descriptions the simulator keeps for `/_sim/sessions/<id>`: enough for
# any test, bounded so a benchmark minting millions of tokens holds no more than this.
KEPT_DESCRIPTIONS = 1024


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """What this simulated system does beyond FCSDK-API.md. The default is none of it."""

    # Some gateways answer a token with the urlSchemeDetails they were sent besides the
    # sessionid; FCSDK-API.md documents only the sessionid.
    echo_description: bool = False
    # FCSDK-API.md: a DELETE of a session answers 204; some installations answer 200.
    delete_status: int = 204

    def __post_init__(self) -> None:
        if not 200 <= self.delete_status <= 299:
            raise ValueError(f"delete_status {self.delete_status} is not a 2xx status")


@dataclass(frozen=True, slots=True)
class ShortCode:
    """What the Live Assist server hands out for one short code."""

    session_token: str
    cid: str


class GatewayState:
    """The mutable state of one simulated system, held by its app under `SIM_STATE`."""

    __slots__ = (
        "name",
        "version",
        "options",
        "files",
        "sessions",
        "released",
        "received",
        "short_codes",
        "requests",
        "fail_status",
        "fail_remaining",
        "delay",
    )

    def __init__(self, name: str, version: str, options: GatewayOptions | None = None) -> None:
        self.name = name
        self.version = version
        self.options = options or GatewayOptions()
        self.files: Mapping[str, tuple[bytes, str]] = cached_library(version)
        self.sessions: set[str] = set()
        self.released = 0  # sessions deleted since the last reset, for the monitoring routes
        # The urlSchemeDetails each recent token request carried, newest last: what the
        # router forwarded, for tests (a real gateway keeps this to itself).
        self.received: OrderedDict[str, Any] = OrderedDict()
        self.short_codes: dict[str, ShortCode] = {}
        self.requests: Counter[str] = Counter()
        self.fail_status: int | None = None
        # None with a fail_status set means "every request until told otherwise".
        self.fail_remaining: int | None = None
        self.delay = 0.0

    def new_token(self, kind: str = "") -> str:
        return f"{self.name}-{kind}{secrets.token_hex(8)}"

    def new_short_code(self) -> str:
        while True:
            # No leading zero, so a client that parses the code as a number keeps 7 digits.
            code = str(secrets.randbelow(9_000_000) + 1_000_000)
            if code not in self.short_codes:
                self.short_codes[code] = ShortCode(self.new_token(), self.new_token("cid-"))
                return code

    def keep_description(self, sid: str, details: Any) -> None:
        self.received[sid] = details
        if len(self.received) > KEPT_DESCRIPTIONS:
            self.received.popitem(last=False)

    def set_version(self, version: str) -> None:
        self.version = version
        self.files = cached_library(version)

    def set_failure(self, status: int | None, count: int | None) -> None:
        if status is None or count == 0:
            self.fail_status = self.fail_remaining = None
        else:
            self.fail_status, self.fail_remaining = status, count

    def take_failure(self) -> int | None:
        """The status this request must fail with, if any; consumes one counted failure."""
        status = self.fail_status
        if status is not None and self.fail_remaining is not None:
            self.fail_remaining -= 1
            if self.fail_remaining <= 0:
                self.fail_status = self.fail_remaining = None
        return status

    def reset(self) -> None:
        """Forget sessions, codes, counters and faults; the version stays (it is installed)."""
        self.sessions.clear()
        self.released = 0
        self.received.clear()
        self.short_codes.clear()
        self.requests.clear()
        self.set_failure(None, None)
        self.delay = 0.0

    def as_json(self) -> dict[str, Any]:
        fail = None
        if self.fail_status is not None:
            fail = {"status": self.fail_status, "count": self.fail_remaining}
        return {
            "name": self.name,
            "version": self.version,
            "open_sessions": len(self.sessions),
            "short_codes": len(self.short_codes),
            "requests": dict(self.requests),
            "fail": fail,
            "delay": self.delay,
        }

    def status_document(self) -> dict[str, Any]:
        """A nested status page, the kind of JSON a monitoring endpoint answers: the open
        sessions at `/gateway/sessions/open` (RFC 6901), nowhere under the flat names."""
        return {
            "system": {"name": self.name, "build": self.version},
            "gateway": {"sessions": {"open": len(self.sessions), "released": self.released}},
            "assist": {"shortCodes": {"active": len(self.short_codes)}},
        }

    def prometheus_text(self) -> str:
        """The same counts as a Prometheus exporter's text exposition (format 0.0.4): one
        metric with a label that tells open from released sessions, so a reader has to pick
        the series by its labels."""
        name = _prometheus_label(self.name)
        return (
            "# HELP fcsdk_sessions Session tokens by state.\n"
            "# TYPE fcsdk_sessions gauge\n"
            f'fcsdk_sessions{{system="{name}",state="open"}} {len(self.sessions)}\n'
            f'fcsdk_sessions{{system="{name}",state="released"}} {self.released}\n'
            "# HELP fcsdk_short_codes Live Assist short codes issued.\n"
            "# TYPE fcsdk_short_codes gauge\n"
            f'fcsdk_short_codes{{system="{name}"}} {len(self.short_codes)}\n'
            "# HELP fcsdk_build_info The release the system serves.\n"
            "# TYPE fcsdk_build_info gauge\n"
            f'fcsdk_build_info{{system="{name}",version="{_prometheus_label(self.version)}"}} 1\n'
        )


def _prometheus_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
