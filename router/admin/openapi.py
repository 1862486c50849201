"""The OpenAPI 3.1 description of the admin listener's JSON API, written by hand.

Hand-written rather than generated: the API is small, and a document a person wrote reads
better than one inferred from handlers. `tests/test_admin_openapi.py` keeps it honest: every
`/api/` route the admin app registers must be described here.
"""

from __future__ import annotations

from typing import Any

from router import __version__
from router.admin.session import COOKIE, CSRF_HEADER

JSON = "application/json"

# Accepted on every write: the bearer token, Basic with the token as password, or the page's
# login session plus its CSRF token (both of the last two together).
WRITE_SECURITY: list[dict[str, list[str]]] = [
    {"bearerAuth": []},
    {"basicAuth": []},
    {"sessionCookie": [], "csrfToken": []},
]
# Every /api/ route needs a credential (SPEC section 2, "Admin access"): only /healthz,
# /readyz and /metrics answer without one.
READ_SECURITY: list[dict[str, list[str]]] = [
    {"bearerAuth": []},
    {"basicAuth": []},
    {"sessionCookie": []},
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


THROTTLED = _error(
    "Too many failed credentials from this address (or overall): not checked; see Retry-After."
)
READ_ERRORS = {
    "401": _error("No admin token, a wrong one, or no login session."),
    "429": THROTTLED,
}
WRITE_ERRORS = {
    "401": _error("No admin token, a wrong one, or no login session."),
    "429": THROTTLED,
    "403": _error(
        "Writes disabled (no admin_token configured), a cross-origin request, or a session "
        "request without its CSRF token."
    ),
    "503": _error("The state store (Redis) is unavailable: nothing was changed."),
}

SYSTEM_PARAM = {
    "name": "system",
    "in": "path",
    "required": True,
    "description": "A configured system id.",
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,31}$"},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {
                "type": "string",
                "description": "Stable machine code.",
                "examples": ["conflict"],
            },
            "message": {"type": "string", "description": "What happened and what to do."},
            "system": {"type": "string", "description": "The system concerned, if any."},
        },
    },
    "System": {
        "type": "object",
        "required": ["id", "state", "open", "gateway", "public_url"],
        "properties": {
            "id": {"type": "string"},
            "state": {
                "enum": ["active", "draining", "drained", "offline", "preview"],
                "description": "The headline word: the first of `states`.",
            },
            "states": {
                "type": "array",
                "items": {"enum": ["active", "draining", "drained", "offline", "preview"]},
                "description": "Every state that holds, e.g. [preview, draining].",
            },
            "drained": {
                "type": "boolean",
                "description": "An idle system that holds no calls (the one drain decision).",
            },
            "open": {
                "type": ["integer", "null"],
                "description": "The count that decides drain (null: unknown); see source.",
            },
            "source": {
                "enum": ["gateway", "router", "unknown"],
                "description": "gateway: its stats_url count decides; router: the routers' "
                "count of tokens and short codes (within shortcode_ttl) not yet released.",
            },
            "router_open": {"type": ["integer", "null"], "description": "The routers' count."},
            "gateway_open": {
                "type": ["integer", "null"],
                "description": "The gateway's own count (stats_url), where it answers.",
            },
            "gateway_error": {"type": ["string", "null"]},
            "drain_rate": {
                "type": ["number", "null"],
                "description": "Items per second the deciding count falls (negative: rises).",
            },
            "drain_eta": {
                "type": ["number", "null"],
                "description": "Seconds until it reaches 0 at that rate, while it falls.",
            },
            "gateway": {"type": "string", "format": "uri"},
            "public_url": {"type": "string", "format": "uri"},
            "version": {"type": ["string", "null"], "description": "Configured release label."},
        },
    },
    "Status": {
        "type": "object",
        "required": ["active", "systems", "offline", "refused", "store", "instance", "uptime"],
        "properties": {
            "active": {"type": "string", "description": "The system receiving new sessions."},
            "systems": {"type": "array", "items": _ref("System")},
            "offline": {"type": "array", "items": {"type": "string"}},
            "refused": {
                "description": "A value in <prefix>:active that routing refused: it names no"
                " configured system (reason 'unknown') or a system marked offline ('offline').",
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "properties": {
                            "value": {"type": "string"},
                            "since": {"type": "number"},
                            "reason": {"enum": ["unknown", "offline"]},
                        },
                    },
                ],
            },
            "store": {
                "type": "object",
                "properties": {
                    "url": {"type": "string", "description": "Redis URL, password redacted."},
                    "synced": {"type": "boolean"},
                    "degraded": {
                        "type": "boolean",
                        "description": "Redis away: routing on the last known state.",
                    },
                    "degraded_since": {"type": ["number", "null"]},
                    "error": {"type": ["string", "null"]},
                    "last_sync": {"type": ["number", "null"]},
                    "persistence": {
                        "enum": ["aof", "rdb", "aof+rdb", "none", "unknown", "memory"],
                        "description": "How Redis persists its data (CONFIG GET).",
                    },
                    "risk": {
                        "type": ["string", "null"],
                        "description": "Why Redis persistence is a risk, if it is.",
                    },
                },
            },
            "instance": {"type": "string", "description": "host:pid of the answering process."},
            "uptime": {"type": "number"},
        },
    },
    "Health": {
        "type": "object",
        "properties": {
            "ok": {"type": ["boolean", "null"], "description": "null until the first probe."},
            "target": {"type": "string", "description": "The URL probed."},
            "status": {"type": ["integer", "null"]},
            "checked_at": {"type": ["number", "null"]},
            "latency_ms": {"type": ["number", "null"]},
            "last_error": {"type": ["string", "null"]},
            "last_error_at": {"type": ["number", "null"]},
            "last_ok_at": {"type": ["number", "null"]},
            "gateway_sessions": {"type": ["integer", "null"]},
            "gateway_codes": {"type": ["integer", "null"]},
        },
    },
    "LiveSystem": {
        "allOf": [
            _ref("System"),
            {
                "type": "object",
                "properties": {
                    "release": {
                        "type": "object",
                        "properties": {
                            "id": {"type": ["string", "null"]},
                            "label": {"type": ["string", "null"]},
                            "error": {"type": ["string", "null"]},
                        },
                    },
                    "health": _ref("Health"),
                    "rate": {
                        "type": "object",
                        "description": "Requests per second seen by this instance.",
                        "properties": {"token": {"type": "number"}, "all": {"type": "number"}},
                    },
                    "trend": {
                        "type": "array",
                        "description": "Open items, oldest first, one point per 2 s.",
                        "items": {"type": ["integer", "null"]},
                    },
                },
            },
        ]
    },
    "Live": {
        "allOf": [
            _ref("Status"),
            {
                "type": "object",
                "properties": {
                    "systems": {"type": "array", "items": _ref("LiveSystem")},
                    "audit": {"type": ["array", "null"], "items": _ref("AuditEntry")},
                    "audit_error": {"type": ["string", "null"]},
                    "rates_scope": {"type": "string"},
                    "now": {"type": "number"},
                },
            },
        ]
    },
    "AuditEntry": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "Redis stream entry id."},
            "time": {"type": "number", "description": "Unix time, seconds."},
            "action": {"enum": ["switch", "offline", "online"]},
            "source": {
                "type": "string",
                "description": "Channel and who: 'api (alice@10.0.0.5)' and 'page (...)' name the"
                " operator and address, 'cli (user@host)', 'external (seen by ...)' (redis-cli).",
            },
            "from": {"type": "string"},
            "to": {"type": "string"},
        },
    },
    "SwitchRequest": {
        "type": "object",
        "required": ["system"],
        "properties": {
            "system": {"type": "string", "description": "The system to make active."},
            "via": {
                "type": "string",
                "maxLength": 16,
                "description": "Channel recorded in the audit stream (default 'api').",
            },
        },
    },
    "SwitchResult": {
        "type": "object",
        "properties": {
            "active": {"type": "string"},
            "previous": {"type": ["string", "null"]},
        },
    },
    "OfflineResult": {
        "type": "object",
        "properties": {"system": {"type": "string"}, "offline": {"type": "boolean"}},
    },
    "Release": {
        "type": "object",
        "description": "A stored release of client libraries, served under `base`.",
        "properties": {
            "release": {"type": "string", "description": "Release id (content digest)."},
            "label": {"type": ["string", "null"], "description": "Human label, e.g. 4.2.1."},
            "digest": {"type": "string"},
            "files": {"type": "integer"},
            "size": {"type": "integer", "description": "Bytes, uncompressed."},
            "created": {"type": "number"},
            "last_active": {"type": "number"},
            "last_system": {"type": "string"},
            "systems": {"type": "array", "items": {"type": "string"}},
            "expires": {"type": "number", "description": "Unix time the store drops it."},
            "base": {"type": "string", "examples": ["/v/r-1a2b3c4d5e6f"]},
        },
    },
    "Releases": {
        "type": "object",
        "properties": {
            "releases": {"type": "array", "items": _ref("Release")},
            "systems": {
                "type": "object",
                "description": "System id -> the release it serves.",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "release": {"type": ["string", "null"]},
                        "label": {"type": ["string", "null"]},
                        "error": {"type": ["string", "null"], "description": "Last check error."},
                    },
                },
            },
            "last_check": {"type": ["number", "null"]},
            "store_error": {"type": ["string", "null"]},
        },
    },
    "RefreshResult": {
        "type": "object",
        "properties": {
            "system": {"type": "string"},
            "release": {"type": ["string", "null"]},
            "label": {"type": ["string", "null"]},
            "previous": {"type": ["string", "null"]},
            "changed": {"type": "boolean"},
            "stored": {"type": "boolean", "description": "First time this release was seen."},
            "files": {"type": "integer"},
            "size": {"type": "integer"},
            "error": {
                "type": ["string", "null"],
                "description": "Why the check failed; the system keeps its release.",
            },
        },
    },
}


def _paths() -> dict[str, Any]:
    return {
        "/healthz": {
            "get": {
                "summary": "Liveness: the process answers",
                "tags": ["probes"],
                "security": [],
                "responses": {"200": _json({"type": "object"}, '{"status": "ok"}')},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness for a load balancer",
                "description": "200 ready or degraded (Redis away, fail-static); "
                "503 while starting or stopping.",
                "tags": ["probes"],
                "security": [],
                "responses": {
                    "200": _json({"type": "object"}, "ready, or degraded with the error"),
                    "503": _json({"type": "object"}, "starting or stopping"),
                },
            }
        },
        "/api/status": {
            "get": {
                "summary": "Active system, every system's state and open count, store health",
                "tags": ["status"],
                "security": READ_SECURITY,
                "responses": {"200": _json(_ref("Status"), "The current status."), **READ_ERRORS},
            }
        },
        "/api/live": {
            "get": {
                "summary": "The admin page's document: status plus health, releases, rates, "
                "trend and recent audit entries",
                "tags": ["status"],
                "security": READ_SECURITY,
                "responses": {
                    "200": _json(_ref("Live"), "The live document."),
                    "401": _error("No admin token and no login session."),
                },
            }
        },
        "/api/events": {
            "get": {
                "summary": "The live document as server-sent events",
                "description": "`event: status` with the live document on every change and "
                "every 2 s; `event: expired` when the login session ends.",
                "tags": ["status"],
                "security": READ_SECURITY,
                "responses": {
                    "200": {
                        "description": "An event stream.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "401": _error("No admin token and no login session."),
                },
            }
        },
        "/api/switch": {
            "post": {
                "summary": "Make a system active (new sessions go there)",
                "description": "Atomic in Redis with its audit entry; the old system keeps "
                "what belongs to it.",
                "tags": ["actions"],
                "security": WRITE_SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("SwitchRequest")}},
                },
                "responses": {
                    "200": _json(_ref("SwitchResult"), "Switched (or already active)."),
                    "400": _error("Malformed JSON or an unknown system."),
                    "409": _error("The system is marked offline."),
                    **WRITE_ERRORS,
                },
            }
        },
        "/api/systems/{system}/offline": {
            "post": {
                "summary": "Mark a system offline: its requests get 503 at once",
                "tags": ["actions"],
                "security": WRITE_SECURITY,
                "parameters": [SYSTEM_PARAM],
                "responses": {
                    "200": _json(_ref("OfflineResult"), "Marked offline."),
                    "400": _error("Unknown system."),
                    **WRITE_ERRORS,
                },
            }
        },
        "/api/systems/{system}/online": {
            "post": {
                "summary": "Bring a system back online",
                "tags": ["actions"],
                "security": WRITE_SECURITY,
                "parameters": [SYSTEM_PARAM],
                "responses": {
                    "200": _json(_ref("OfflineResult"), "Online."),
                    "400": _error("Unknown system."),
                    **WRITE_ERRORS,
                },
            }
        },
        "/api/audit": {
            "get": {
                "summary": "The audit stream, newest first",
                "tags": ["status"],
                "security": READ_SECURITY,
                "parameters": [
                    {
                        "name": "count",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                    }
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "entries": {"type": "array", "items": _ref("AuditEntry")}
                            },
                        },
                        "Entries.",
                    ),
                    "400": _error("count is not a whole number."),
                    "503": _error("Redis is unavailable."),
                    **READ_ERRORS,
                },
            }
        },
        "/api/releases": {
            "get": {
                "summary": "Stored client-library releases and what each system serves",
                "tags": ["releases"],
                "security": READ_SECURITY,
                "responses": {
                    "200": _json(_ref("Releases"), "Releases."),
                    "503": _error("Redis is unavailable."),
                    **READ_ERRORS,
                },
            }
        },
        "/api/releases/refresh": {
            "post": {
                "summary": "Fingerprint every system's client libraries now",
                "description": "Fetches the library files from each system, stores a new "
                "release's bytes and makes every instance hand it out. A system whose libraries "
                "cannot be fetched keeps its release; its result carries the error.",
                "tags": ["actions", "releases"],
                "security": WRITE_SECURITY,
                "parameters": [
                    {
                        "name": "system",
                        "in": "query",
                        "required": False,
                        "description": "Only these systems (repeatable); default all.",
                        "schema": {"type": "array", "items": {"type": "string"}},
                        "style": "form",
                        "explode": True,
                    }
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "results": {"type": "array", "items": _ref("RefreshResult")}
                            },
                        },
                        "One result per system checked.",
                    ),
                    "400": _error("Unknown system."),
                    **WRITE_ERRORS,
                },
            }
        },
        "/api/docs": {
            "get": {
                "summary": "This document as a page for people",
                "tags": ["meta"],
                "security": READ_SECURITY,
                "responses": {
                    "200": {"description": "HTML.", "content": {"text/html": {"schema": {}}}},
                    **READ_ERRORS,
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "tags": ["meta"],
                "security": READ_SECURITY,
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1."), **READ_ERRORS},
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "token-router admin API",
            "version": __version__,
            "description": "Switch FCSDK token requests between systems, mark systems "
            "offline, read status and the audit stream. Served on the admin listener only. "
            "Writes need the admin token (Bearer, or Basic with the token as password) or "
            "the admin page's login session with its CSRF token.",
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "probes", "description": "For load balancers and orchestrators."},
            {"name": "status", "description": "What the router sees."},
            {"name": "actions", "description": "State changes; recorded in the audit stream."},
            {"name": "releases", "description": "Version-pinned client libraries."},
            {"name": "meta"},
        ],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "router.admin_token",
                },
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Any user name; router.admin_token as the password.",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": COOKIE,
                    "description": "Set by the admin page's login form (POST /login).",
                },
                "csrfToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": CSRF_HEADER,
                    "description": "The login session's CSRF token (in the admin page).",
                },
            },
        },
    }
