"""Rendering of every error as one JSON shape.

``{"type", "status", "message", "request_id", "errors"?, "details"?}`` where ``type`` is
stable and machine-readable and ``errors`` lists field problems with their ``path``.
Validation errors from FastAPI and Starlette's own 404/405 use the same shape; a database
integrity failure that slipped past a service becomes a 409, and an exhausted connection
pool or an unreachable database a 503 with ``Retry-After``, never a 500.
"""

from __future__ import annotations

from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from sesame.kit.errors import ErrorBody, FieldError, SesameError, validation_message
from sesame.kit.logging import get_logger

log = get_logger("sesame.errors")

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "route_not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _request_id(request: Request) -> str | None:
    request_id = request.scope.get("state", {}).get("request_id")
    return str(request_id) if request_id is not None else None


def error_response(
    request: Request,
    *,
    status: int,
    type_: str,
    message: str,
    errors: list[dict[str, Any]] | None = None,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(
        type=type_,
        status=status,
        message=message,
        request_id=_request_id(request),
        errors=errors or [],
        details=details or {},
    )
    return JSONResponse(body.as_dict(), status_code=status, headers=headers)


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


async def _sesame_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SesameError)
    return error_response(
        request,
        status=exc.status,
        type_=exc.type,
        message=exc.message,
        errors=[e.as_dict() for e in exc.errors],
        details=_json_safe(exc.details),
        headers=exc.headers,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        location = tuple(error.get("loc", ()))
        errors.append(
            FieldError(
                path=tuple(p if isinstance(p, int) else str(p) for p in location),
                message=validation_message(error),
                code=str(error.get("type", "invalid")),
            ).as_dict()
        )
    return error_response(
        request,
        status=422,
        type_="validation_error",
        message="the request is not valid; see errors",
        errors=errors,
    )


def allowed_methods(request: Request) -> str:
    """Every method the request's path answers to, for ``Allow``.

    Starlette takes ``Allow`` from the first route whose path matched; a path served by
    several routes (``GET`` and ``POST`` on a collection) would name only one of them.
    """
    routes: Any = request.app.routes
    # Recent FastAPI versions nest included routers; earlier ones list routes flat.
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    methods: set[str] = set()
    for route in flatten(routes) if flatten is not None else routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(request.url.path):
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return error_response(
        request,
        status=exc.status_code,
        type_=_HTTP_TYPES.get(exc.status_code, "http_error"),
        message=str(exc.detail),
        headers=headers or None,
    )


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("integrity_error", error_type=type(exc).__name__)
    return error_response(
        request, status=409, type_="conflict", message="the change conflicts with existing data"
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """No connection within the pool timeout, or the database is down: shed the request
    with a 503 and a short Retry-After instead of queueing it further."""
    log.warning("database_unavailable", error_type=type(exc).__name__)
    return error_response(
        request,
        status=503,
        type_="service_unavailable",
        message="the service is overloaded or its database is unreachable; retry shortly",
        headers={"Retry-After": "1"},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(SesameError, _sesame_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)
    app.add_exception_handler(ConnectionError, _database_unavailable)
