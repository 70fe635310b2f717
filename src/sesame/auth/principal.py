"""Who is calling, and what they may do.

A ``Principal`` is resolved once per request from the bearer credential: a staff access
token, a resident access token, or a partner API key. It carries the tenant scope used
by every repository query and answers permission questions by resource group:

- ``can(group, action)`` decides whether the kind of operation is allowed at all (a 403
  when not);
- ``scope`` confines which rows exist for the caller (another tenant's row is a 404).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from starlette.requests import Request

from sesame.auth.repository import (
    ApiKeyRepository,
    OtpRepository,
    SessionRepository,
)
from sesame.auth.tokens import decode_access_token
from sesame.kit.errors import Forbidden, Unauthorized
from sesame.kit.keyring import PurposeKeys
from sesame.kit.logging import get_logger
from sesame.kit.repository import TenantScope
from sesame.kit.security import digest, equal
from sesame.models import StaffRole, SubjectKind
from sesame.staff.repository import StaffRepository

API_KEY_PREFIX = "ses_"
API_KEY_PREFIX_LENGTH = 12  # hex characters after "ses_"
API_KEY_TOUCH_INTERVAL = timedelta(minutes=10)


class Action(enum.StrEnum):
    READ = "read"
    WRITE = "write"


class Group(enum.StrEnum):
    """Resource groups that permissions are granted on."""

    PARTNERS = "partners"
    SITES = "sites"  # sites, buildings, units, entrances
    PEOPLE = "people"  # people, households
    STAFF = "staff"
    API_KEYS = "api_keys"
    DEVICES = "devices"  # devices, their commands and events
    KEYS = "keys"  # keys, PIN codes, credentials, the access log
    NOTIFICATIONS = "notifications"  # campaigns, webhook endpoints, deliveries


READ_WRITE = frozenset({Action.READ, Action.WRITE})
READ_ONLY = frozenset({Action.READ})

ROLE_GRANTS: dict[StaffRole, dict[Group, frozenset[Action]]] = {
    StaffRole.PLATFORM_ADMIN: dict.fromkeys(Group, READ_WRITE),
    StaffRole.PARTNER_ADMIN: {
        Group.PARTNERS: READ_WRITE,
        Group.SITES: READ_WRITE,
        Group.PEOPLE: READ_WRITE,
        Group.STAFF: READ_WRITE,
        Group.API_KEYS: READ_WRITE,
        Group.DEVICES: READ_WRITE,
        Group.KEYS: READ_WRITE,
        Group.NOTIFICATIONS: READ_WRITE,
    },
    StaffRole.SITE_MANAGER: {
        Group.PARTNERS: READ_ONLY,
        Group.SITES: READ_WRITE,
        Group.PEOPLE: READ_WRITE,
        Group.DEVICES: READ_WRITE,
        Group.KEYS: READ_WRITE,
        Group.NOTIFICATIONS: READ_WRITE,
    },
    StaffRole.INSTALLER: {
        Group.PARTNERS: READ_ONLY,
        Group.SITES: READ_ONLY,
        Group.DEVICES: READ_WRITE,
    },
}

# Scopes a partner API key may hold; ``<group>:write`` implies ``<group>:read``.
API_KEY_GROUPS = (
    Group.PARTNERS,
    Group.SITES,
    Group.PEOPLE,
    Group.DEVICES,
    Group.KEYS,
    Group.NOTIFICATIONS,
)
API_KEY_SCOPES = tuple(f"{g.value}:{a.value}" for g in API_KEY_GROUPS for a in Action)

PrincipalKind = Literal["staff", "api_key", "resident"]


def resident_id(keys: PurposeKeys, phone: str) -> str:
    """A resident's opaque id, stable across sign-ins: what their access token names and
    their idempotency records are kept under. A keyed digest, so the phone number (a
    small space to search) cannot be recovered from it without the server's key."""
    return "r_" + keys.digest("resident-id", phone)[:32]


def names_resident(keys: PurposeKeys, subject: str, phone: str) -> bool:
    """Does a token's subject name this resident, under any secret of the ring? A token
    made before a change of master secret names them by the older key."""
    found = False
    for candidate in keys.digests("resident-id", phone):
        found |= equal(subject, "r_" + candidate[:32])
    return found


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    id: str
    scope: TenantScope
    role: StaffRole | None = None
    api_key_scopes: frozenset[str] = frozenset()
    person_ids: frozenset[UUID] = frozenset()
    phone: str | None = None
    session_id: UUID | None = None
    staff_id: UUID | None = None
    api_key_id: UUID | None = None
    valid_until: datetime | None = None

    @property
    def is_platform(self) -> bool:
        return self.role is StaffRole.PLATFORM_ADMIN

    @property
    def is_site_scoped(self) -> bool:
        return self.scope.site_ids is not None

    @property
    def idempotency_scope(self) -> str:
        return f"{self.kind}:{self.id}"

    def actor(self, person_id: UUID | None = None) -> dict[str, Any]:
        """Who this is, as domain events record it: opaque ids and the role, no secrets.

        A resident acts through one of their person records (one per partner that knows
        them), named by ``person_id`` when the event concerns it; otherwise only the kind
        is recorded, so no event links a resident's records across partners."""
        if self.kind == "staff":
            return {"kind": "staff", "id": self.staff_id, "role": self.role}
        if self.kind == "api_key":
            return {
                "kind": "api_key",
                "id": self.api_key_id,
                "partner": self.scope.partner_id,
                "scopes": sorted(self.api_key_scopes),
            }
        if person_id is not None and person_id in self.person_ids:
            return {"kind": "resident", "person": str(person_id)}
        return {"kind": "resident"}

    def reference(self, person_id: UUID | None = None) -> str:
        """Who this is, as a stored ``issued_by`` / ``requested_by`` records it: the
        staff account, the API key or the resident's person record — opaque ids only."""
        if self.kind == "resident":
            known = person_id is not None and person_id in self.person_ids
            return f"resident:{person_id}" if known else "resident"
        return f"{self.kind}:{self.id}"

    def can(self, group: Group, action: Action) -> bool:
        if self.kind == "staff" and self.role is not None:
            return action in ROLE_GRANTS[self.role].get(group, frozenset())
        if self.kind == "api_key":
            wanted = f"{group.value}:{action.value}"
            implied = f"{group.value}:{Action.WRITE.value}"
            return wanted in self.api_key_scopes or implied in self.api_key_scopes
        return False

    def require(self, group: Group, action: Action) -> None:
        if not self.can(group, action):
            raise Forbidden(f"this credential may not {action.value} {group.value}")

    def require_partner_level(self, what: str) -> None:
        """Some operations (creating a site, say) need the whole partner, not a site list."""
        if self.is_site_scoped or self.kind == "resident":
            raise Forbidden(f"{what} needs a partner-wide role")


_CACHE_ATTR = "sesame_principal"


async def authenticate(request: Request, session: Any, runtime: Any) -> Principal | None:
    """Resolve the request's credential once; later calls return the cached answer.

    Returns None when the request carries no credential; raises ``Unauthorized`` when it
    carries a bad one.
    """
    cached = getattr(request.state, _CACHE_ATTR, None)
    if cached is not None:
        if isinstance(cached, Exception):
            raise cached
        return cached if isinstance(cached, Principal) else None
    try:
        principal = await _resolve(request, session, runtime)
    except Unauthorized as exc:
        setattr(request.state, _CACHE_ATTR, exc)
        raise
    setattr(request.state, _CACHE_ATTR, principal if principal is not None else False)
    return principal


def known_principal(request: Request, runtime: Any) -> Principal | None:
    """The request's principal when it is known without the database: resolved earlier
    in this request, or in the credential cache. None means ``authenticate`` must decide
    (no credential, a bad one, or one not seen for a while)."""
    cached = getattr(request.state, _CACHE_ATTR, None)
    if cached is not None:
        return cached if isinstance(cached, Principal) else None
    try:
        credential = _bearer_credential(request)
    except Unauthorized:
        return None
    if credential is None:
        return None
    principal: Principal | None = runtime.credential_cache.get(credential, runtime.clock.now())
    if principal is not None:
        setattr(request.state, _CACHE_ATTR, principal)
    return principal


def _bearer_credential(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise Unauthorized("use 'Authorization: Bearer <token or API key>'")
    return credential


async def _resolve(request: Request, session: Any, runtime: Any) -> Principal | None:
    credential = _bearer_credential(request)
    if credential is None:
        return None
    now = runtime.clock.now()
    cached: Principal | None = runtime.credential_cache.get(credential, now)
    if cached is not None:
        return cached
    if credential.startswith(API_KEY_PREFIX):
        principal = await _resolve_api_key(request, credential, session, runtime)
    else:
        principal = await _resolve_access_token(credential, session, runtime)
    runtime.credential_cache.put(credential, principal, principal.valid_until)
    return principal


async def _resolve_access_token(token: str, session: Any, runtime: Any) -> Principal:
    now = runtime.clock.now()
    claims = decode_access_token(runtime.keys.access_tokens, token, now=now)
    auth_session = await SessionRepository(session).get(claims.session_id)
    if (
        auth_session is None
        or auth_session.revoked_at is not None
        or auth_session.expires_at <= now
    ):
        raise Unauthorized("session ended; sign in again")
    if claims.kind == "resident":
        if auth_session.subject_kind is not SubjectKind.RESIDENT or auth_session.phone is None:
            raise Unauthorized("invalid access token")
        subject = resident_id(runtime.keys.access_tokens, auth_session.phone)
        if not names_resident(runtime.keys.access_tokens, claims.subject, auth_session.phone):
            # Tokens from before residents had opaque ids named the phone: sign in again.
            raise Unauthorized("invalid access token")
        person_ids = await OtpRepository(session).person_ids_for_phone(auth_session.phone)
        return Principal(
            kind="resident",
            id=subject,
            # Residents reach only their own records, through /v1/me; no tenant rows.
            scope=TenantScope(partner_id=UUID(int=0), site_ids=frozenset()),
            person_ids=frozenset(person_ids),
            phone=auth_session.phone,
            session_id=auth_session.id,
            valid_until=claims.expires_at,
        )
    if auth_session.subject_kind is not SubjectKind.STAFF or auth_session.staff_id is None:
        raise Unauthorized("invalid access token")
    staff = await StaffRepository(session).by_id(auth_session.staff_id)
    if staff is None or not staff.is_active or str(staff.id) != claims.subject:
        raise Unauthorized("account disabled")
    return staff_principal(staff, session_id=auth_session.id, valid_until=claims.expires_at)


def staff_principal(
    staff: Any, *, session_id: UUID | None = None, valid_until: datetime | None = None
) -> Principal:
    role: StaffRole = staff.role
    if role is StaffRole.PLATFORM_ADMIN:
        scope = TenantScope.platform()
    elif role.site_scoped:
        scope = TenantScope(partner_id=staff.partner_id, site_ids=frozenset(staff.site_ids))
    else:
        scope = TenantScope(partner_id=staff.partner_id)
    return Principal(
        kind="staff",
        id=str(staff.id),
        scope=scope,
        role=role,
        session_id=session_id,
        staff_id=staff.id,
        valid_until=valid_until,
    )


def parse_api_key(credential: str) -> tuple[str, str] | None:
    body = credential[len(API_KEY_PREFIX) :]
    prefix, separator, secret = (
        body[:API_KEY_PREFIX_LENGTH],
        body[API_KEY_PREFIX_LENGTH : API_KEY_PREFIX_LENGTH + 1],
        body[API_KEY_PREFIX_LENGTH + 1 :],
    )
    if separator != "_" or len(prefix) != API_KEY_PREFIX_LENGTH or not secret:
        return None
    return prefix, secret


async def _resolve_api_key(
    request: Request, credential: str, session: Any, runtime: Any
) -> Principal:
    parsed = parse_api_key(credential)
    if parsed is None:
        raise Unauthorized("malformed API key")
    prefix, secret = parsed
    repository = ApiKeyRepository(session)
    key = await repository.by_prefix(prefix)
    now = runtime.clock.now()
    # Compare even when the prefix is unknown, so timing does not reveal valid prefixes.
    expected = key.secret_digest if key is not None else digest("no such key")
    if not equal(expected, digest(secret)) or key is None:
        raise Unauthorized("invalid API key")
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise Unauthorized("API key revoked or expired")
    if key.last_used_at is None or now - key.last_used_at > API_KEY_TOUCH_INTERVAL:
        request.state.api_key_used = (key.id, now)
    return Principal(
        kind="api_key",
        id=str(key.id),
        scope=TenantScope(partner_id=key.partner_id),
        api_key_scopes=frozenset(key.scopes),
        api_key_id=key.id,
        valid_until=key.expires_at,
    )


async def record_api_key_use(request: Request, runtime: Any) -> None:
    """Store when a key was last used, after the request's own transaction has ended.

    It runs in a transaction of its own, at most every few minutes per key, and never
    fails the request: a missed timestamp is harmless, a failed GET is not.
    """
    used = getattr(request.state, "api_key_used", None)
    if used is None:
        return
    key_id, when = used
    try:
        async with runtime.session_factory() as side_session:
            await ApiKeyRepository(side_session).touch(key_id, when)
            await side_session.commit()
    except Exception as exc:
        get_logger("sesame.auth").warning("api_key_touch_failed", error_type=type(exc).__name__)
