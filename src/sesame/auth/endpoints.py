"""``/v1/auth`` (sign-in and out), ``/v1/api-keys`` and ``/v1/me``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from sesame.api.crud import ResourceSpec, crud_router
from sesame.api.deps import (
    AppRuntime,
    ClientAddress,
    CurrentPrincipal,
    CurrentResident,
    DbSession,
)
from sesame.api.route import API_PREFIX, SesameRoute
from sesame.auth import service
from sesame.auth.api_keys import ApiKeyService
from sesame.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyMe,
    ApiKeyQuery,
    ApiKeyRead,
    ApiKeyUpdate,
    CodeRequest,
    CodeRequested,
    CodeVerification,
    LoginRequest,
    Me,
    RefreshRequest,
    ResidentMe,
    StaffMe,
    TokenPair,
)
from sesame.kit.errors import NotFound
from sesame.people.schemas import HouseholdRead, PersonRead
from sesame.people.service import households_of, people_by_ids
from sesame.staff.repository import StaffRepository

auth_router = APIRouter(prefix=f"{API_PREFIX}/auth", tags=["auth"], route_class=SesameRoute)

_auth_errors: dict[int | str, dict[str, Any]] = {
    401: {"description": "Wrong credentials"},
    429: {"description": "Too many attempts; see Retry-After"},
}


@auth_router.post("/login", response_model=TokenPair, responses=_auth_errors, operation_id="login")
async def login(
    body: LoginRequest, session: DbSession, runtime: AppRuntime, client: ClientAddress
) -> dict[str, Any]:
    """Staff sign-in with email and password."""
    tokens = await service.login(
        session,
        runtime,
        email=body.email,
        password=body.password.get_secret_value(),
        client_address=client,
    )
    return service.describe_tokens(tokens, runtime.clock.now())


@auth_router.post(
    "/refresh", response_model=TokenPair, responses=_auth_errors, operation_id="refresh_tokens"
)
async def refresh(body: RefreshRequest, session: DbSession, runtime: AppRuntime) -> dict[str, Any]:
    """Trade a refresh token for a new pair; the old refresh token stops working."""
    tokens = await service.refresh(
        session, runtime, refresh_token=body.refresh_token.get_secret_value()
    )
    return service.describe_tokens(tokens, runtime.clock.now())


@auth_router.post("/logout", status_code=204, response_class=Response, operation_id="logout")
async def logout(principal: CurrentPrincipal, session: DbSession, runtime: AppRuntime) -> Response:
    """End the current session: its access and refresh tokens stop working at once."""
    await service.logout(session, runtime, principal)
    return Response(status_code=204)


@auth_router.post(
    "/codes",
    status_code=202,
    response_model=CodeRequested,
    responses=_auth_errors,
    operation_id="request_sign_in_code",
)
async def request_code(
    body: CodeRequest, session: DbSession, runtime: AppRuntime, client: ClientAddress
) -> CodeRequested:
    """Residents: send a one-time sign-in code by SMS to a registered phone."""
    expires_at = await service.request_code(
        session, runtime, phone=body.phone, client_address=client
    )
    return CodeRequested(expires_in=int((expires_at - runtime.clock.now()).total_seconds()))


@auth_router.post(
    "/codes/verify",
    response_model=TokenPair,
    responses=_auth_errors,
    operation_id="verify_sign_in_code",
)
async def verify_code(
    body: CodeVerification, session: DbSession, runtime: AppRuntime, client: ClientAddress
) -> dict[str, Any]:
    """Residents: trade the code for tokens."""
    tokens = await service.verify_code(
        session, runtime, phone=body.phone, code=body.code.get_secret_value(), client_address=client
    )
    return service.describe_tokens(tokens, runtime.clock.now())


api_keys_router = crud_router(
    ResourceSpec(
        "api_key",
        "api-keys",
        ApiKeyService,
        ApiKeyRead,
        ApiKeyCreate,
        ApiKeyUpdate,
        ApiKeyQuery,
        operations=frozenset({"read", "list", "update", "delete"}),
    )
)


@api_keys_router.post(
    "",
    status_code=201,
    response_model=ApiKeyCreated,
    operation_id="create_api_key",
    summary="Create an API key",
)
async def create_api_key(
    body: ApiKeyCreate,
    response: Response,
    session: DbSession,
    principal: CurrentPrincipal,
    runtime: AppRuntime,
) -> ApiKeyCreated:
    """The answer holds the whole key once; Sesame keeps only a digest of it."""
    owner = ApiKeyService(session, principal, runtime)
    key, secret = await service.create_api_key(
        session,
        principal,
        partner_id=await owner.owning_partner(body.partner_id),
        name=body.name,
        scopes=body.scopes,
        expires_at=body.expires_at,
    )
    response.headers["Location"] = f"{API_PREFIX}/api-keys/{key.id}"
    return ApiKeyCreated(**ApiKeyRead.model_validate(key).model_dump(), key=secret)


me_router = APIRouter(prefix=f"{API_PREFIX}/me", tags=["me"], route_class=SesameRoute)


@me_router.get("", response_model=Me, operation_id="get_me")
async def me(principal: CurrentPrincipal, session: DbSession) -> Any:
    """Who the credential belongs to; for a resident, their profiles and households."""
    if principal.kind == "staff" and principal.staff_id is not None:
        staff = await StaffRepository(session).by_id(principal.staff_id)
        if staff is None:
            raise NotFound("account not found")
        return StaffMe(
            id=staff.id,
            email=staff.email,
            name=staff.name,
            role=staff.role,
            partner_id=staff.partner_id,
            site_ids=staff.site_ids,
        )
    if principal.kind == "api_key" and principal.api_key_id is not None:
        key = await ApiKeyService.key_of(session, principal.api_key_id)
        return ApiKeyMe(id=key.id, partner_id=key.partner_id, name=key.name, scopes=key.scopes)
    people = await people_by_ids(session, sorted(principal.person_ids))
    households = await households_of(session, sorted(principal.person_ids))
    return ResidentMe(
        phone=principal.phone or "",
        people=[PersonRead.model_validate(p) for p in people],
        households=[HouseholdRead.model_validate(h) for h in households],
    )


@me_router.get("/households", response_model=list[HouseholdRead], operation_id="list_my_households")
async def my_households(principal: CurrentResident, session: DbSession) -> Any:
    """A resident's households, across every partner that knows their phone."""
    return await households_of(session, sorted(principal.person_ids))
