"""The OpenAPI 3.1 document of the admin listener, built from the operations it serves.

Nothing here describes a route by hand: paths, parameters, request bodies, answers and
their schemas come from the `Operation` declarations (spec.py) and the pydantic models they
name (models.py); error answers and codes from the error hierarchy (router/errors.py); the
`SystemId` enum from the configuration. What stays written here is what no code says: the
title, the tags' descriptions and the security schemes' descriptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema

from router import __version__
from router.admin.models import Error
from router.admin.session import COOKIE, CSRF_HEADER
from router.admin.spec import (
    REF,
    SYSTEM_ID_MARK,
    SYSTEM_ID_REF,
    Access,
    Answer,
    Content,
    Operation,
    ref,
)
from router.errors import RequestError

JSON = "application/json"

SECURITY: Mapping[Access, list[dict[str, list[str]]]] = {
    Access.PUBLIC: [],
    Access.READ: [{"bearerAuth": []}, {"basicAuth": []}, {"sessionCookie": []}],
    Access.WRITE: [{"bearerAuth": []}, {"basicAuth": []}, {"sessionCookie": [], "csrfToken": []}],
}

SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "router.admin_token"},
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
        "description": "The login session's CSRF token (in the admin page); needed with the "
        "session cookie on every write.",
    },
}

TAGS = [
    {"name": "probes", "description": "For load balancers and orchestrators."},
    {"name": "status", "description": "What the router sees."},
    {"name": "actions", "description": "State changes; recorded in the audit stream."},
    {"name": "releases", "description": "Version-pinned client libraries."},
    {"name": "meta", "description": "This document."},
]


class _Schemas(GenerateJsonSchema):
    """pydantic's generator without the `title` it puts on every field (noise in docs)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def error_classes() -> list[type[RequestError]]:
    """Every concrete error of the hierarchy, parents first."""
    found: list[type[RequestError]] = []
    pending: list[type[RequestError]] = [RequestError]
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def _models(operations: Sequence[Operation]) -> list[type[BaseModel]]:
    """The models the document names, in a stable order."""
    found: list[type[BaseModel]] = [Error]
    for op in operations:
        answers = [op.ok, *(a.model for a in op.answers.values())]
        named = [op.body, *answers]
        named += [m for a in answers if isinstance(a, Content) for m in a.models]
        for model in named:
            if isinstance(model, type) and model not in found:
                found.append(model)
    return found


def _schemas(models: Sequence[type[BaseModel]], params: Sequence[type[BaseModel]]) -> Any:
    """(components/schemas, per-parameter-model schemas) from pydantic, refs rewritten."""
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "serialization") for m in models]
    pairs += [(m, "validation") for m in params]
    keyed, top = models_json_schema(pairs, ref_template=REF, schema_generator=_Schemas)
    return keyed, _link_system_ids(top.get("$defs", {}))


def _link_system_ids(node: Any) -> Any:
    """Replace every SystemId marker by a reference to the enum of configured systems."""
    if isinstance(node, dict):
        if node.get(SYSTEM_ID_MARK):
            rest = {k: v for k, v in node.items() if k not in (SYSTEM_ID_MARK, "type")}
            return {"$ref": SYSTEM_ID_REF, **rest}
        return {k: _link_system_ids(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_link_system_ids(v) for v in node]
    return node


def _error_response(errors: Mapping[type[RequestError], str]) -> dict[str, Any]:
    codes = sorted({cls.code for cls in errors})
    return {
        "description": " ".join(dict.fromkeys(errors.values())),
        "content": {
            JSON: {"schema": {"allOf": [ref(Error), {"properties": {"error": {"enum": codes}}}]}}
        },
    }


def _content(model: type[BaseModel] | Content) -> dict[str, Any]:
    if isinstance(model, Content):
        return {model.media_type: {"schema": dict(model.schema)}}
    return {JSON: {"schema": ref(model)}}


def _parameters(
    where: str, model: type[BaseModel] | None, param_schemas: Mapping[str, Any]
) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = param_schemas[model.__name__]
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        param: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
        }
        if "description" in prop:
            param["description"] = prop.pop("description")
        param["schema"] = prop
        if prop.get("type") == "array":
            param |= {"style": "form", "explode": True}
        out.append(param)
    return out


def _operation(op: Operation, param_schemas: Mapping[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "security": SECURITY[op.access],
    }
    if op.description:
        doc["description"] = op.description
    parameters = _parameters("path", op.path_params, param_schemas) + _parameters(
        "query", op.query, param_schemas
    )
    if parameters:
        doc["parameters"] = parameters
    if op.body is not None:
        # An empty body is read as {} (parse_body): it is optional when no field is required.
        required = any(f.is_required() for f in op.body.model_fields.values())
        doc["requestBody"] = {"required": required, "content": {JSON: {"schema": ref(op.body)}}}
    ok: dict[str, Any] = {"description": op.ok_description, "content": _content(op.ok)}
    if op.links:
        ok["links"] = {name: dict(link) for name, link in op.links.items()}
    responses: dict[str, Any] = {str(op.ok_status): ok}
    by_status: dict[int, dict[type[RequestError], str]] = {}
    for cls, why in op.all_errors().items():
        by_status.setdefault(cls.status, {})[cls] = why
    for status in sorted({*by_status, *op.answers}):
        answer: Answer | None = op.answers.get(status)
        if answer is not None:
            responses[str(status)] = {
                "description": answer.description,
                "content": _content(answer.model),
            }
        else:
            responses[str(status)] = _error_response(by_status[status])
    doc["responses"] = responses
    return doc


def openapi_document(operations: Iterable[Operation], system_ids: Sequence[str]) -> dict[str, Any]:
    ops = list(operations)
    params = [m for op in ops for m in (op.query, op.path_params) if m is not None]
    _, schemas = _schemas(_models(ops), list(dict.fromkeys(params)))
    param_schemas = {m.__name__: schemas.pop(m.__name__) for m in params if m.__name__ in schemas}
    schemas["SystemId"] = {
        "type": "string",
        "enum": list(system_ids),
        "description": "A system id of this router's configuration.",
    }
    schemas["Error"]["properties"]["error"]["enum"] = sorted({cls.code for cls in error_classes()})
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, param_schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "token-router admin API",
            "version": __version__,
            "description": "Switch FCSDK token requests between systems, mark systems "
            "offline, read status and the audit stream. Served on the admin listener only. "
            "Writes need the admin token (Bearer, or Basic with the token as password) or "
            "the admin page's login session with its CSRF token. Every error is JSON: "
            "`{error, message, system?}` with a stable `error` code.",
        },
        "servers": [{"url": "/"}],
        "tags": TAGS,
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }
