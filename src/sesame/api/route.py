"""The route class of every ``/v1`` endpoint: it owns the request's transaction.

For each request it opens one database session, runs the endpoint, and then commits when
the answer is a success to an unsafe method, or rolls back otherwise. Services only
flush. The commit happens before the response is sent, so a client never sees a success
for work that did not persist. POSTs with an ``Idempotency-Key`` are answered from the
stored response when one exists; the new answer is stored in the same transaction.

A ``SesameError`` raised with ``keep_changes=True`` commits before it is rendered: a
refused sign-in must still count the failed attempt.

A query parameter the endpoint does not declare is a 422 ``extra_forbidden`` on every
route, as list filters' models refuse one: a misspelt ``?fromat=svg`` is an error, not a
request silently answered as if it were not there.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Coroutine
from typing import Any
from uuid import UUID

import fastapi.routing
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response

from sesame.api import idempotency
from sesame.auth.principal import authenticate, record_api_key_use
from sesame.kit.db import commit, reset_write_intent, set_write_intent, urgent
from sesame.kit.errors import Conflict, SesameError, Unauthorized
from sesame.kit.logging import get_logger
from sesame.runtime import Runtime

log = get_logger("sesame.api")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Routers carry the full prefix themselves (and are included without one), so that a
# route's ``path`` is its whole template, as metrics and logs label requests with it.
API_PREFIX = "/v1"

# The attribute of an endpoint function naming its direct handler (see ``SesameRoute``).
DIRECT_HANDLER = "sesame_direct_handler"


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def with_uuid_convertors(path: str, endpoint: Callable[..., Any]) -> str:
    """``{object_id}`` becomes ``{object_id:uuid}`` where the endpoint takes a UUID.

    A path segment that is not an id then matches no id route: ``PATCH
    /v1/pin-codes/generate`` is a 405 (only ``POST`` is served there), not a validation
    error about ``object_id``, and ``/v1/sites/123`` is a 404 like any path the API does
    not have. The OpenAPI document shows the plain template.
    """
    try:
        hints = typing.get_type_hints(endpoint)
    except (NameError, TypeError):
        return path
    for name, hint in hints.items():
        if hint is UUID:
            path = path.replace("{" + name + "}", "{" + name + ":uuid}")
    return path


def query_names(dependant: Dependant) -> frozenset[str]:
    """Every query parameter of an endpoint and its dependencies, by the name clients
    send: a query model (``Annotated[Model, Query()]``) contributes its fields."""
    names: set[str] = set()
    for field in dependant.query_params:
        model = field.field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names |= {info.alias or name for name, info in model.model_fields.items()}
        else:
            names.add(field.alias)
    for sub in dependant.dependencies:
        names |= query_names(sub)
    return frozenset(names)


def refuse_unknown_query(request: Request, declared: frozenset[str]) -> None:
    unknown = [name for name in request.query_params if name not in declared]
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": "Extra inputs are not permitted",
                    "input": request.query_params[name],
                }
                for name in dict.fromkeys(unknown)
            ]
        )


def sesame_routes(routes: Any) -> list[SesameRoute]:
    """The ``SesameRoute``s among an app's routes, in included routers too."""
    # Recent FastAPI versions nest included routers; earlier ones list routes flat.
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    flat = [context.route for context in flatten(routes)] if flatten is not None else routes
    return [route for route in flat if isinstance(route, SesameRoute)]


class SesameRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(with_uuid_convertors(path, endpoint), endpoint, **kwargs)
        self.query_names = query_names(self.dependant)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        # An endpoint may carry a handler of its own that does what FastAPI's would (the
        # same dependencies, the same response) without solving dependencies or
        # validating parameters per request: ``crud_router``'s GET by id.
        direct: Callable[[Request], Coroutine[Any, Any, Response]] | None = getattr(
            self.endpoint, DIRECT_HANDLER, None
        )
        endpoint_handler = direct if direct is not None else super().get_route_handler()

        async def handle(request: Request) -> Response:
            refuse_unknown_query(request, self.query_names)
            runtime = runtime_of(request)
            unsafe = request.method not in SAFE_METHODS
            token = set_write_intent(unsafe)
            try:
                with urgent():  # someone waits for the answer: before background writers
                    return await _in_transaction(request, runtime, endpoint_handler, unsafe=unsafe)
            finally:
                reset_write_intent(token)
                await record_api_key_use(request, runtime)

        return handle


async def _in_transaction(
    request: Request,
    runtime: Runtime,
    endpoint_handler: Callable[[Request], Coroutine[Any, Any, Response]],
    *,
    unsafe: bool,
) -> Response:
    factory = runtime.session_factory if unsafe else runtime.read_session_factory
    async with factory() as session:
        request.state.db = session
        pending = None
        if request.method == "POST" and idempotency.HEADER in request.headers:
            # The body first, so a slow client holds no connection while it arrives; then
            # looked up outside the request's transaction, which on SQLite holds the
            # write lock from its first statement: the endpoint may do slow work first.
            await request.body()
            async with runtime.read_session_factory() as reader:
                scope = await _idempotency_scope(request, reader, runtime)
                pending = await idempotency.describe(request, scope)
                if pending is not None:
                    replay = await idempotency.stored_response(reader, runtime, pending)
                    if replay is not None:
                        return replay
        try:
            response = await endpoint_handler(request)
        except SesameError as exc:
            if exc.keep_changes:
                await commit(session)
            elif pending is not None and exc.status == 409:
                # A twin request with the same key may have just created what this one
                # collided with: if it committed its answer, that answer is ours too.
                await session.rollback()
                replay = await idempotency.stored_response(session, runtime, pending)
                if replay is not None:
                    return replay
            raise
        if not unsafe:
            return response
        if response.status_code >= 400:
            await session.rollback()
            return response
        try:
            await session.flush()
        except IntegrityError as exc:
            raise Conflict("the change conflicts with existing data") from exc
        if pending is not None:
            try:
                await idempotency.store(session, runtime, pending, response)
            except IntegrityError:
                # Another request with the same key committed first: answer as it did.
                await session.rollback()
                replay = await idempotency.stored_response(session, runtime, pending)
                if replay is None:
                    raise
                return replay
        await commit(session)
        return response


async def _idempotency_scope(request: Request, session: Any, runtime: Runtime) -> str:
    try:
        principal = await authenticate(request, session, runtime)
    except Unauthorized:
        # The endpoint's own dependency will refuse the request; nothing will be stored.
        return "invalid"
    return principal.idempotency_scope if principal is not None else "anonymous"
