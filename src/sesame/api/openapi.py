"""The OpenAPI document tells the truth about errors.

FastAPI documents its own validation-error body; Sesame answers every error, validation
included, with one shape. The document is rewritten once, lazily, so that every operation
declares that shape for its 422 and as its ``default`` response.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

_FASTAPI_VALIDATION = "#/components/schemas/HTTPValidationError"
_ERROR_REF = "#/components/schemas/Error"


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
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith("/v1"):
                continue
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status, response in responses.items():
                    if status.startswith(("4", "5")) and "content" not in response:
                        response["content"] = error_response["content"]
                responses.setdefault("default", error_response)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
