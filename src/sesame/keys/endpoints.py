"""``/v1/keys``, ``/v1/me/keys``, guest passes, credentials, ``/v1/pin-codes``,
``/v1/access-events`` and site signing keys."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response

from sesame.api.crud import CrudService, ResourceSpec, crud_router
from sesame.api.deps import AppRuntime, CurrentPrincipal, CurrentResident, DbSession
from sesame.api.route import API_PREFIX, SesameRoute
from sesame.auth.principal import Action, Group
from sesame.devices import health
from sesame.keys import credentials, resident
from sesame.keys.credentials import new_signing_key
from sesame.keys.pins import PinService, code_of
from sesame.keys.repository import (
    AccessEventRepository,
    KeyRepository,
    SigningKeyRepository,
)
from sesame.keys.schemas import (
    AccessEventQuery,
    AccessEventRead,
    Credential,
    CredentialRequest,
    GeneratedCode,
    GenerateRequest,
    GuestPass,
    GuestPassRequest,
    KeyCreate,
    KeyQuery,
    KeyRead,
    KeyUpdate,
    PinCreate,
    PinQuery,
    PinRead,
    PinUpdate,
    ShareRequest,
    SigningKeyRead,
)
from sesame.keys.service import KeyService, announce
from sesame.kit.errors import NotFound, ValidationFailed
from sesame.kit.pagination import Page, decode_cursor, next_cursor
from sesame.kit.repository import TenantScope
from sesame.models import AccessEvent, KeyKind, PinCode
from sesame.people.service import households_of
from sesame.runtime import Runtime
from sesame.sites.repository import SiteRepository

ImageFormat = Annotated[str, Query(alias="format", pattern="^(png|svg)$", description="png or svg")]

keys_router = crud_router(
    ResourceSpec("key", "keys", KeyService, KeyRead, KeyCreate, KeyUpdate, KeyQuery)
)


def _pass_urls(runtime: Runtime, token: str) -> dict[str, str]:
    base = runtime.settings.base_url
    return {
        "link": f"{base}{API_PREFIX}/passes/{token}",
        "png": f"{base}{API_PREFIX}/passes/{token}?format=png",
        "svg": f"{base}{API_PREFIX}/passes/{token}?format=svg",
    }


@keys_router.get(
    "/{object_id}/pass",
    operation_id="get_guest_pass",
    response_model=GuestPass,
    responses={404: {"description": "No such key visible to the caller"}},
)
async def key_pass(
    object_id: UUID,
    session: DbSession,
    principal: CurrentPrincipal,
    runtime: AppRuntime,
) -> GuestPass:
    """A guest key's pass: its token, the link to send the guest, and its QR code's
    image URLs (``/v1/passes/{token}?format=png|svg``). Staff who may read the key, and the
    resident who issued the pass, may fetch it."""
    if principal.kind == "resident":
        key = await KeyRepository(session).by_id(object_id)
        if key is None or key.issued_by_person_id not in principal.person_ids:
            raise NotFound(f"key {object_id} not found")
    else:
        key = await KeyService(session, principal, runtime).get(object_id)
    if key.kind is not KeyKind.GUEST or key.entrance_id is None:
        raise ValidationFailed("only guest keys to one entrance have a QR pass")
    site = await SiteRepository(session).get(TenantScope.platform(), key.site_id)
    assert site is not None
    token = await credentials.guest_pass(session, runtime, key, site, key.entrance_id)
    return GuestPass(key=KeyRead.model_validate(key), token=token, **_pass_urls(runtime, token))


_IMAGE = {"schema": {"type": "string", "format": "binary"}}


@keys_router.post(
    "/{object_id}/credentials",
    response_model=list[Credential],
    operation_id="issue_key_credentials",
)
async def key_credentials(
    object_id: UUID,
    session: DbSession,
    principal: CurrentPrincipal,
    runtime: AppRuntime,
    body: CredentialRequest | None = None,
) -> Any:
    """Signed single-use credentials of one key, as JSON, for each entrance it opens: what
    the holder's phone would get, for a partner to test a reader with (a key given to a
    test person). A key that opens nothing now (revoked, expired, suspended) has none."""
    principal.require(Group.KEYS, Action.WRITE)
    key = await KeyService(session, principal, runtime).get(object_id)
    return await resident.credentials_of_key(
        session, runtime, key, (body or CredentialRequest()).per_entrance
    )


passes_router = APIRouter(prefix=f"{API_PREFIX}/passes", tags=["passes"], route_class=SesameRoute)


@passes_router.get(
    "/{token}",
    operation_id="show_pass",
    response_class=Response,
    responses={200: {"content": {"image/png": _IMAGE, "image/svg+xml": _IMAGE}}},
)
async def show_pass(
    token: str,
    image: ImageFormat = "png",
) -> Response:
    """The page a guest's link opens: the pass as a QR code. The token is the pass; no
    sign-in is needed, and nothing is checked here (the reader checks)."""
    if len(token) > 2000 or token.count(".") != 2:
        raise NotFound("no such pass")
    return Response(
        credentials.qr(token, image),
        media_type="image/png" if image == "png" else "image/svg+xml",
    )


me_keys_router = APIRouter(prefix=f"{API_PREFIX}/me", tags=["me"], route_class=SesameRoute)


@me_keys_router.get("/keys", response_model=list[KeyRead], operation_id="list_my_keys")
async def my_keys(principal: CurrentResident, session: DbSession) -> Any:
    """Keys the resident holds, and keys and passes they have given."""
    return await resident.my_keys(session, principal)


@me_keys_router.post(
    "/keys/{key_id}/share", status_code=201, response_model=KeyRead, operation_id="share_my_key"
)
async def share_key(
    key_id: UUID,
    body: ShareRequest,
    principal: CurrentResident,
    session: DbSession,
    runtime: AppRuntime,
) -> Any:
    """Give a household member a key to your unit, within the site's sharing policy."""
    return await resident.share(session, runtime, principal, key_id, body)


@me_keys_router.delete(
    "/keys/{key_id}", status_code=204, response_class=Response, operation_id="revoke_my_key"
)
async def revoke_key(
    key_id: UUID, principal: CurrentResident, session: DbSession, runtime: AppRuntime
) -> Response:
    """Take back a key you shared or a pass you gave; it stops working at once."""
    await resident.revoke_issued(session, runtime, principal, key_id)
    return Response(status_code=204)


@me_keys_router.post(
    "/guest-passes", status_code=201, response_model=GuestPass, operation_id="create_guest_pass"
)
async def create_guest_pass(
    body: GuestPassRequest, principal: CurrentResident, session: DbSession, runtime: AppRuntime
) -> GuestPass:
    """A time-boxed pass for a guest: a QR code valid in its window, for its uses."""
    key, token = await resident.guest_pass(session, runtime, principal, body)
    return GuestPass(key=KeyRead.model_validate(key), token=token, **_pass_urls(runtime, token))


@me_keys_router.post(
    "/credentials", response_model=list[Credential], operation_id="issue_my_credentials"
)
async def my_credentials(
    principal: CurrentResident,
    session: DbSession,
    runtime: AppRuntime,
    body: CredentialRequest | None = None,
) -> Any:
    """Signed single-use credentials for offline readers, for every entrance your keys
    open; fetch a new batch when they run low or expire."""
    return await resident.mobile_credentials(
        session, runtime, principal, (body or CredentialRequest()).per_entrance
    )


class _PinService(PinService):
    """Answers with PinRead, which needs the code unsealed."""

    def read(self, pin: PinCode) -> PinRead:
        error = [dict(pin.error)] if pin.error else []
        return PinRead(
            id=pin.id,
            site_id=pin.site_id,
            device_id=pin.device_id,
            key_id=pin.key_id,
            person_id=pin.person_id,
            name=pin.name,
            code=code_of(self.runtime, pin),
            kind="time_bound" if pin.starts_at or pin.ends_at else "ongoing",
            starts_at=pin.starts_at,
            ends_at=pin.ends_at,
            status=pin.status,
            slot=pin.slot,
            errors=error,
            warnings=health.as_list(pin.warnings),
            created_at=pin.created_at,
            updated_at=pin.updated_at,
        )

    async def get(self, object_id: UUID) -> Any:
        return self.read(await super().get(object_id))

    async def create(self, data: Any) -> Any:
        return self.read(await super().create(data))

    async def update(self, object_id: UUID, data: Any) -> Any:
        return self.read(await super().update(object_id, data))

    async def list(self, query: Any) -> Any:
        rows, cursor = await super().list(query)
        return [self.read(row) for row in rows], cursor


pins_router = crud_router(
    ResourceSpec("pin_code", "pin-codes", _PinService, PinRead, PinCreate, PinUpdate, PinQuery)
)


@pins_router.post("/generate", response_model=GeneratedCode, operation_id="generate_pin_code")
async def generate_code(
    body: GenerateRequest, session: DbSession, principal: CurrentPrincipal, runtime: AppRuntime
) -> GeneratedCode:
    """A code that fits the lock's rules and is not on it yet (nothing is stored)."""
    return GeneratedCode(
        code=await PinService(session, principal, runtime).generate(body.device_id)
    )


class AccessEventService(CrudService[AccessEvent]):
    group = Group.KEYS
    noun = "access event"
    repository_class = AccessEventRepository


access_router = APIRouter(
    prefix=f"{API_PREFIX}/access-events", tags=["access-events"], route_class=SesameRoute
)


@access_router.get("", response_model=Page[AccessEventRead], operation_id="list_access_events")
async def list_access_events(
    query: Annotated[AccessEventQuery, Query()],
    session: DbSession,
    principal: CurrentPrincipal,
    runtime: AppRuntime,
) -> Any:
    """Every grant and refusal, oldest first. Staff see their scope; a resident sees their
    own keys' events and their households' doors."""
    if principal.kind == "resident":
        person_ids = sorted(principal.person_ids)
        households = await households_of(session, person_ids)
        keys = await KeyRepository(session).of_people(person_ids)
        rows = await AccessEventRepository(session).visible_to_resident(
            person_ids,
            [h.unit_id for h in households],
            [k.id for k in keys],
            limit=query.limit,
            after=decode_cursor(query.cursor) if query.cursor else None,
        )
        items, cursor = rows[: query.limit], next_cursor(rows, query.limit)
    else:
        items, cursor = await AccessEventService(session, principal, runtime).list(query)
    return Page[AccessEventRead](
        items=[AccessEventRead.model_validate(r) for r in items], next_cursor=cursor
    )


signing_router = APIRouter(prefix=f"{API_PREFIX}/sites", tags=["sites"], route_class=SesameRoute)


async def _site_for(
    session: Any, principal: Any, runtime: Runtime, site_id: UUID, action: Action
) -> Any:
    principal.require(Group.KEYS, action)
    site = await SiteRepository(session).get(principal.scope, site_id)
    if site is None:
        raise NotFound(f"site {site_id} not found")
    return site


@signing_router.get(
    "/{site_id}/signing-keys", response_model=list[SigningKeyRead], operation_id="list_signing_keys"
)
async def signing_keys(
    site_id: UUID, session: DbSession, principal: CurrentPrincipal, runtime: AppRuntime
) -> Any:
    """The public keys the site's readers trust (public by nature)."""
    await _site_for(session, principal, runtime, site_id, Action.READ)
    return await SigningKeyRepository(session).published(site_id)


@signing_router.post(
    "/{site_id}/signing-keys/rotate",
    status_code=201,
    response_model=SigningKeyRead,
    operation_id="rotate_signing_key",
)
async def rotate_signing_key(
    site_id: UUID, session: DbSession, principal: CurrentPrincipal, runtime: AppRuntime
) -> Any:
    """Sign new credentials with a new key; readers keep trusting the old one until the
    credentials it signed have expired."""
    site = await _site_for(session, principal, runtime, site_id, Action.WRITE)
    record = await new_signing_key(session, runtime, site)
    announce(session, runtime, {site.id})
    return record


routers = [keys_router, passes_router, me_keys_router, pins_router, access_router, signing_router]
