"""What a system's optional `stats_url` answers: the gateway's own count of open sessions.

The router's count covers what it issued; the gateway's count also covers sessions that
reached it another way. Drain is only "drained" when both agree the system is empty. How the
count is read from the answer (a JSON pointer, a Prometheus metric) is each system's
configuration: router/systems/monitoring.py. A JSON answer may also name the release the gateway
serves (the release label). The probe itself is the prober's (router/systems/prober.py).
"""

from __future__ import annotations

from typing import Any

from router.config import SystemConfig
from router.systems.monitoring import json_document, read_count

# Field names a stats answer may use for the release it serves (the release label).
VERSION_FIELDS = ("version", "release", "sdkVersion")


def stats_document(body: bytes) -> dict[str, Any] | None:
    """A stats answer as a JSON object, or None when it is not one."""
    return json_document(body)


def system_count(system: SystemConfig, body: bytes) -> tuple[int | None, str]:
    """(count, "") in `system`'s stats answer as its config reads it, or (None, why not)."""
    return read_count(body, system.stats_format, system.stats_count, system.stats_metric)


def parse_reported_version(body: bytes) -> str | None:
    """The release label in a gateway's JSON stats answer (`{"version": "2.0", ...}`), if any."""
    doc = stats_document(body)
    if doc is None:
        return None
    for name in VERSION_FIELDS:
        value = doc.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()[:64]
    return None
