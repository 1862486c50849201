"""How an admin API operation is declared: one `Operation` beside its handler.

The admin app registers its API routes *from* these declarations (`register`), and
`openapi.py` builds `/api/openapi.json` from the same declarations, so a route cannot be
served without being documented. What is derived rather than written:

- the route table (method, path, handler) and the operation ids;
- request shapes: the pydantic models named in `body`, `query` and `path` are the ones the
  handler parses the request with (`parse_body`, `parse_query`, `parse_path`), so limits
  such as `count <= 1000` are enforced exactly as documented, and a violation is a 400;
- configured system ids: a `SystemId` field is an enum of the configured systems in the
  document and is checked against them when parsed;
- error answers: every status an operation can answer and the stable `error` codes behind
  it come from the error hierarchy (`router/errors.py`): what the declared models imply
  (400, 413), what the access level implies (401, 403), and the errors listed in `errors`
  with the reason this operation raises them.

To add a route: write the handler, then add an `Operation(...)` to the `OPERATIONS` tuple of
its module (docs/admin-api.md has a worked example). `tests/admin/test_openapi.py` fails
for any admin route that is registered another way.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
)

from router.admin.app_keys import RUNTIME
from router.admin.json_errors import MAX_BODY
from router.errors import (
    BadRequest,
    BodyTooLarge,
    Forbidden,
    MalformedJSON,
    RequestError,
    TooManyAttempts,
    Unauthorized,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

REF = "#/components/schemas/{model}"
SYSTEM_ID_REF = REF.format(model="SystemId")


class Access(enum.Enum):
    """Who may call an operation; decides its security requirements and its 401/403."""

    PUBLIC = "public"  # no credential: only outside /api/ (/healthz, /readyz, /metrics)
    READ = "read"  # an operator's token, or a login session (GET under /api/)
    WRITE = "write"  # a token, or a login session plus its CSRF token; same origin


# What each access level can answer on its own, with the reason: the checks of the
# `admin_access` middleware (auth.py), which guards every path under /api/ (GET: READ,
# anything else: WRITE). One place: a new way of refusing credentials is added here and
# every protected operation documents it.
_THROTTLED = (
    "Too many failed credentials from this address (or overall): not checked; see Retry-After."
)
ACCESS_ERRORS: Mapping[Access, Mapping[type[RequestError], str]] = {
    Access.PUBLIC: {},
    Access.READ: {
        Unauthorized: "No admin token, a wrong one, or no login session.",
        Forbidden: "The admin API is disabled (no admin token configured).",
        TooManyAttempts: _THROTTLED,
    },
    Access.WRITE: {
        Unauthorized: "No admin token, a wrong one, or no login session.",
        Forbidden: "The admin API is disabled (no admin token configured), a cross-origin "
        "request, or a session request without its CSRF token.",
        TooManyAttempts: _THROTTLED,
    },
}


def _configured(value: str, info: ValidationInfo) -> str:
    systems: Sequence[str] = (info.context or {}).get("systems", ())
    if value not in systems:
        raise ValueError(f"unknown system {value!r}; configured systems: {', '.join(systems)}")
    return value


# A configured system id in a request: documented as the enum of the configured systems
# (components/schemas/SystemId, filled from the config), checked against them when parsed.
# pydantic cannot emit a $ref of ours here, so the schema carries a marker that openapi.py
# replaces by a reference to SystemId.
SYSTEM_ID_MARK = "x-system-id"
SystemId = Annotated[
    str, AfterValidator(_configured), WithJsonSchema({"type": "string", SYSTEM_ID_MARK: True})
]
# The same in an answer (documentation only: answers are not validated at run time).
SystemRef = Annotated[str, WithJsonSchema({"type": "string", SYSTEM_ID_MARK: True})]


def ref(model: type[BaseModel]) -> dict[str, str]:
    """A JSON Schema reference to `model` in the document's components."""
    return {"$ref": REF.format(model=model.__name__)}


class Body(BaseModel):
    """Base of request bodies: strict JSON types, unknown fields refused (a typo is a 400,
    not a silently ignored option)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Params(BaseModel):
    """Base of query and path parameters (strings converted to the declared types)."""

    model_config = ConfigDict(extra="ignore")


@dataclass(frozen=True)
class Content:
    """A success answer that is not a JSON model: its media type and schema."""

    media_type: str
    schema: Mapping[str, Any]
    models: tuple[type[BaseModel], ...] = ()  # the models `schema` refers to by $ref


@dataclass(frozen=True)
class Answer:
    """An answer besides 200 that is not an error of the hierarchy (e.g. /readyz's 503)."""

    description: str
    model: type[BaseModel] | Content


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    access: Access
    ok: type[BaseModel] | Content  # the success answer
    ok_description: str = "OK."
    ok_status: int = 200  # e.g. 201 for an operation that creates something
    description: str = ""
    body: type[Body] | None = None
    query: type[Params] | None = None
    path_params: type[Params] | None = None
    # Errors this operation raises itself (beyond those its models and access imply): why.
    errors: Mapping[type[RequestError], str] = field(default_factory=dict)
    answers: Mapping[int, Answer] = field(default_factory=dict)
    # OpenAPI links of the success answer (name -> operationId plus how to fill its inputs): what
    # a client, and schemathesis's stateful phase, can call next with this answer's values.
    links: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    def all_errors(self) -> dict[type[RequestError], str]:
        """Every error this operation can answer, with the reason (derived ones first)."""
        found: dict[type[RequestError], str] = {}
        if self.body is not None:
            found[MalformedJSON] = "The body is not a JSON object."
            found[BodyTooLarge] = f"The body is larger than {MAX_BODY} bytes."
        if self.body is not None or self.query is not None or self.path_params is not None:
            found[BadRequest] = "A field or parameter is missing, unknown or out of its limits."
        found.update(ACCESS_ERRORS[self.access])
        found.update(self.errors)
        return found


def register(app: web.Application, operations: Iterable[Operation]) -> None:
    """Add the operations' routes to the admin app: the only way API routes are added."""
    for op in operations:
        app.router.add_route(op.method, op.path, op.handler)


# --- parsing requests with the declared models ------------------------------------------


def _systems(request: web.Request) -> tuple[str, ...]:
    return request.app[RUNTIME].config.system_ids


def describe(exc: ValidationError, where: str) -> str:
    """One line naming the field and the problem, for the 400's message."""
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    name = f"{where} {loc}" if loc else where
    extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{name}: {message}{extra}"


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The JSON body as `model`: 400 malformed_json when it is not a JSON object, 400
    bad_request naming the field otherwise, 413 when larger than client_max_size. An empty
    body is `{}` (so a body whose fields all have defaults may be left out)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"the body is larger than {MAX_BODY} bytes") from None
    try:
        return model.model_validate_json(raw or b"{}", context={"systems": _systems(request)})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise MalformedJSON(f"the body is not valid JSON: {first['msg']}") from None
        if first["type"] == "model_type":
            raise MalformedJSON("the body must be a JSON object") from None
        raise BadRequest(describe(exc, "body field")) from None


def parse_query(request: web.Request, model: type[M]) -> M:
    """The query string as `model`; a list field takes every value of a repeated name."""
    data: dict[str, object] = {}
    for name, info in model.model_fields.items():
        values = request.query.getall(name, [])
        if not values:
            continue
        origin = getattr(info.annotation, "__origin__", None)
        data[name] = values if origin is list else values[0]
    try:
        return model.model_validate(data, context={"systems": _systems(request)})
    except ValidationError as exc:
        raise BadRequest(describe(exc, "query parameter")) from None


def parse_path(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(
            dict(request.match_info), context={"systems": _systems(request)}
        )
    except ValidationError as exc:
        raise BadRequest(describe(exc, "path parameter")) from None
