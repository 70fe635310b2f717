"""The OpenAPI document tells the truth about errors, bodies, headers and access.

FastAPI documents its own validation-error body; Sesame answers every error, validation
included, with one shape. The document is rewritten once, lazily, so that every operation
declares that shape for its 422 and as its ``default`` response, and so that generated
clients can make every call the API serves:

- an optional body is the model, not required (FastAPI says "the model or null", which
  clients then send as a JSON ``null`` or fail to encode at all);
- every POST declares the ``Idempotency-Key`` header it accepts;
- an operation that needs a credential says so, with its 401; the ledger's say what
  ``SESAME_LEDGER_ACCESS`` makes of them (a credential is optional when it is public).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from sesame.api.route import sesame_routes

_FASTAPI_VALIDATION = "#/components/schemas/HTTPValidationError"
_ERROR_REF = "#/components/schemas/Error"
_BEARER = "HTTPBearer"
LEDGER_PATHS = "/v1/ledger"

IDEMPOTENCY_HEADER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Any unique string (a UUID): a retry with the same key and body gets the "
    "stored answer (`Idempotent-Replayed: true`), never a second object; with another "
    "body it is a 422 `idempotency_key_reused`.",
    # What sesame.api.idempotency accepts: 1 to 255 printable ASCII characters.
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}


class FieldErrorModel(BaseModel):
    path: list[str | int] = Field(description='Where the problem is, e.g. ["body", "phone"].')
    message: str
    code: str = Field(description="Stable machine-readable code of the field problem.")


class ErrorModel(BaseModel):
    """Every error response has this shape."""

    type: str = Field(description="Stable machine-readable error type, e.g. `not_found`.")
    status: int
    message: str = Field(description="For people; do not parse it.")
    request_id: str | None = Field(description="Quote it when reporting a problem.")
    errors: list[FieldErrorModel] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


def _replace_refs(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("$ref") == _FASTAPI_VALIDATION:
            return {"$ref": _ERROR_REF}
        return {key: _replace_refs(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_replace_refs(item) for item in node]
    return node


def _optional_body(operation: dict[str, Any]) -> None:
    """``body: Model | None = None`` is documented as the model, with ``required: false``."""
    body = operation.get("requestBody")
    if body is None:
        return
    for media in body.get("content", {}).values():
        options = media.get("schema", {}).get("anyOf")
        if options is None:
            continue
        models = [option for option in options if option != {"type": "null"}]
        if len(models) == 1 and len(models) < len(options):
            media["schema"] = models[0]
            body["required"] = False


def _access(operation: dict[str, Any], path: str, ledger_access: str) -> None:
    security = operation.get("security")
    if not security:
        return
    if path.startswith(LEDGER_PATHS) and ledger_access == "public":
        # Anyone may read; a credential is accepted (and checked) all the same.
        operation["security"] = [{}, *security]
        return
    responses = operation.setdefault("responses", {})
    responses.setdefault("401", {"description": "No credential, or one that is not valid"})


def _post_routes(app: FastAPI) -> set[str]:
    """The paths (as the document writes them) whose POST runs through SesameRoute, which
    honours ``Idempotency-Key``."""
    routes = sesame_routes(app.routes)
    return {route.path_format for route in routes if "POST" in (route.methods or ())}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema: dict[str, Any] = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema = _replace_refs(schema)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for obsolete in ("HTTPValidationError", "ValidationError"):
            components.pop(obsolete, None)
        error_schema = ErrorModel.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(error_schema.pop("$defs", {}))
        components["Error"] = error_schema
        error_response = {
            "description": "Error (see `type`)",
            "content": {"application/json": {"schema": {"$ref": _ERROR_REF}}},
        }
        ledger_access = app.state.runtime.settings.ledger_access
        idempotent = _post_routes(app)
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith("/v1"):
                continue
            for method, operation in operations.items():
                _optional_body(operation)
                _access(operation, path, ledger_access)
                if method == "post" and path in idempotent:
                    operation.setdefault("parameters", []).append(dict(IDEMPOTENCY_HEADER))
                responses = operation.setdefault("responses", {})
                for status, response in responses.items():
                    if status.startswith(("4", "5")) and "content" not in response:
                        response["content"] = error_response["content"]
                responses.setdefault("default", error_response)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
