"""The error hierarchy: every error a user or a client can act on.

`RouterError` is what the CLI catches once (one line, exit 2); `RequestError` and its
subclasses are what the proxy and admin middlewares render as JSON with a stable `code`.
"""

from __future__ import annotations

from typing import Any


class RouterError(Exception):
    """An error whose message is written for the person who has to fix it."""


class ConfigError(RouterError):
    """A configuration key has a bad or missing value."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class UsageError(RouterError):
    """A command was asked to do something that cannot be done (unknown system, ...)."""


class StoreUnavailable(RouterError):
    """The state store (Redis) could not be reached or answered with an error."""


class WrongKeyType(StoreUnavailable):
    """A token-router key in Redis holds another kind of value (Redis answered WRONGTYPE).

    Redis is up; the state behind the key cannot be read or written until an operator
    repairs the key, so callers fail static exactly as for an outage, but the message names
    the key and the redis-cli command that fixes it.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class RequestError(RouterError):
    """An error answered to an HTTP client as JSON: status, stable code, optional system."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, system: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.system = system

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.system is not None:
            body["system"] = self.system
        return body


class MalformedJSON(RequestError):
    status = 400
    code = "malformed_json"


class BadRequest(RequestError):
    status = 400
    code = "bad_request"


class Unauthorized(RequestError):
    status = 401
    code = "unauthorized"


class Forbidden(RequestError):
    status = 403
    code = "forbidden"


class PreviewRefused(Forbidden):
    """A preview credential in the header that does not check out: refused, never answered
    by the active system instead (a test web app would pass while testing the old system)."""

    code = "preview_refused"


class TooManyAttempts(RequestError):
    """Failed credentials from this address (or overall) are being throttled."""

    status = 429
    code = "too_many_attempts"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFound(RequestError):
    status = 404
    code = "not_found"


class MethodNotAllowed(RequestError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class Conflict(RequestError):
    """A state change that is refused as it stands (switch to an offline system, ...)."""

    status = 409
    code = "conflict"


class BodyTooLarge(RequestError):
    status = 413
    code = "body_too_large"


class RequestTimeout(RequestError):
    """The client did not send its whole request within the deadline."""

    status = 408
    code = "request_timeout"


class UpstreamUnavailable(RequestError):
    status = 502
    code = "upstream_unavailable"


class UpstreamTooLarge(UpstreamUnavailable):
    """A gateway's answer exceeded `max_response_size`; its connection was dropped."""

    code = "upstream_too_large"


class ShortCodeCollision(UpstreamUnavailable):
    """A system kept answering short codes the router still routes to another system."""

    code = "short_code_collision"


class SystemOffline(RequestError):
    status = 503
    code = "system_offline"


class ServiceUnavailable(RequestError):
    status = 503
    code = "unavailable"


class Overloaded(ServiceUnavailable):
    """This worker holds as many gateway answer bytes as its budget allows
    (router.answer_budget); answered with Retry-After."""

    code = "overloaded"
    retry_after = 1.0


class UpstreamTimeout(RequestError):
    status = 504
    code = "upstream_timeout"


class GateRefused(Conflict):
    """A safety gate refused a switch, undo, rollout or offline (SPEC section 6).

    The API answers 409 with the gate's name; the CLI prints one line and exits 3.
    `overridable` says whether `--force` / `"force": true` would let it through (every gate
    but `expect`, the compare-and-set).
    """

    status = 409
    code = "refused"

    def __init__(
        self, gate: str, message: str, *, system: str | None = None, overridable: bool = True
    ) -> None:
        super().__init__(message, system=system)
        self.gate = gate
        self.overridable = overridable

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["gate"] = self.gate
        body["override"] = '"force": true' if self.overridable else None
        return body
