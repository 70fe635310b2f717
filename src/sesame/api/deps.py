"""Dependencies every endpoint uses, defined once as ``Annotated`` aliases.

All are ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, a
thread hop per request for nothing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from sesame.api.route import runtime_of
from sesame.auth.principal import Principal, authenticate, known_principal
from sesame.kit import addresses
from sesame.kit.errors import Forbidden, Unauthorized
from sesame.outbox.actor import bind_actor
from sesame.runtime import Runtime

# Declared so that OpenAPI and /docs show the bearer scheme; parsing is ours.
_bearer = HTTPBearer(
    auto_error=False,
    description="A staff or resident access token, or a partner API key (`ses_...`).",
)


# For an endpoint that reads the credential itself (or takes none): the document then
# declares the bearer scheme for it.
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def _runtime(request: Request) -> Runtime:
    return runtime_of(request)


async def _session(request: Request) -> AsyncSession:
    session: AsyncSession | None = getattr(request.state, "db", None)
    if session is None:  # a route outside SesameRoute asked for a session
        raise RuntimeError("no database session: the route must use SesameRoute")
    return session


AppRuntime = Annotated[Runtime, Depends(_runtime)]
DbSession = Annotated[AsyncSession, Depends(_session)]


async def principal_of(request: Request, runtime: Runtime) -> Principal:
    """The request's principal, or ``Unauthorized``: what ``CurrentPrincipal`` injects,
    for handlers that run without FastAPI's dependency solving (``SesameRoute``)."""
    principal = known_principal(request, runtime)  # no session when the cache knows it
    if principal is None:
        # Read outside the request's transaction: on SQLite a writing request holds the
        # write lock from its first statement, and the endpoint may hash a password first.
        async with runtime.read_session_factory() as reader:
            principal = await authenticate(request, reader, runtime)
    if principal is None:
        raise Unauthorized("authentication required")
    bind_actor(principal.actor())  # recorded on the request's domain events
    return principal


async def _principal(
    request: Request,
    runtime: AppRuntime,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return await principal_of(request, runtime)


CurrentPrincipal = Annotated[Principal, Depends(_principal)]


async def _resident(principal: CurrentPrincipal) -> Principal:
    if principal.kind != "resident":
        raise Forbidden("residents only")
    return principal


CurrentResident = Annotated[Principal, Depends(_resident)]


async def client_address(request: Request) -> str:
    """The caller's address: the peer's, or from a trusted proxy's ``X-Forwarded-For``."""
    return addresses.client_address(
        request.client.host if request.client else None,
        request.headers.getlist("x-forwarded-for"),
        runtime_of(request).settings.trusted_proxies,
    )


ClientAddress = Annotated[str, Depends(client_address)]
