"""The FCSDK JSON bodies the token hop reads and rewrites: pure functions over bytes and dicts.

A session description's `urlSchemeDetails` is pointed at the chosen system's public URL
(FCSDK-API.md); a gateway's answer is read for the one field the router learns from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from router.config import SystemConfig
from router.errors import MalformedJSON


@dataclass(frozen=True, slots=True)
class PublicEndpoint:
    """Where browsers of one system connect: what `urlSchemeDetails` must say.

    Computed once per system (SystemConfig's properties parse the URL on every call)."""

    secure: bool
    host: str
    port: int

    @classmethod
    def of(cls, system: SystemConfig) -> PublicEndpoint:
        return cls(system.public_secure, system.public_host, system.public_port)


def rewrite_session_description(doc: dict[str, Any], public: PublicEndpoint) -> dict[str, Any]:
    """Point `urlSchemeDetails` at the chosen system's public URL, in place.

    The port keeps the JSON type the client used (FCSDK samples send both "8443" and 8443);
    when there was none, the string form of the samples is used.
    """
    details = doc.get("urlSchemeDetails")
    if details is None:
        details = doc["urlSchemeDetails"] = {}
    elif not isinstance(details, dict):
        raise MalformedJSON("urlSchemeDetails must be a JSON object")
    sent = details.get("port")
    port: int | str = public.port
    if not isinstance(sent, int) or isinstance(sent, bool):
        port = str(port)
    details["secure"] = public.secure
    details["host"] = public.host
    details["port"] = port
    return doc


def parse_json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedJSON(f"{what} must be a JSON object")
    return doc


def json_field(body: bytes, name: str) -> str | None:
    """A string field of a JSON answer, or None when the answer is not what we expect."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = doc.get(name) if isinstance(doc, dict) else None
    return value if isinstance(value, str) and value else None
