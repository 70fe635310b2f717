"""Credentials a door can check on its own: signed tokens, the trust readers hold, QR passes.

A credential is a JWS (compact form, EdDSA over Ed25519) signed with its site's signing
key. It names the key (``key``), the holder (``sub``), the one entrance it is for
(``aud``), its validity (``nbf``/``exp``, short), the UTC intervals a schedule allows
within it (``sch``), how many times it may be used at that entrance (``uses``), and its
own id (``jti``). A reader verifies it with nothing but the site's public keys and the
list of blocked keys, both pushed to it on the device protocol's ``trust`` channel, and
counts each ``jti`` it admits, so a copy presented again is a replay. The exact check is
in ``sesame.keys.reader`` and ``docs/protocol.md``.

Mobile credentials are issued in small batches of single-use tokens, one batch per
entrance, valid at most a day; a guest's QR pass is one token for its whole window and
number of uses, and stays the same for the pass's life (the same ``jti``).
"""

from __future__ import annotations

import io
import time
import uuid
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import jwt
import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.ext.asyncio import AsyncSession

from sesame.devices import protocol
from sesame.keys.access import Place, Schedule
from sesame.keys.repository import KeyRepository, SigningKeyRepository
from sesame.kit.security import b64url
from sesame.models import Key, Site, SiteSigningKey
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime

TOKEN_TYPE = "sesame-access+jwt"  # noqa: S105 - a media type, not a secret
MOBILE_LIFETIME = timedelta(hours=24)
PASS_LIFETIME = timedelta(days=30)  # the longest a guest pass may run
# Blocked keys stay on readers' lists as long as any of their credentials may be valid.
BLOCK_WINDOW = PASS_LIFETIME


def public_b64(private: Ed25519PrivateKey) -> str:
    return b64url(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


async def new_signing_key(session: AsyncSession, runtime: Runtime, site: Site) -> SiteSigningKey:
    private = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    record = SiteSigningKey(
        partner_id=site.partner_id,
        site_id=site.id,
        public_key=public_b64(private),
        sealed_private_key=runtime.keys.site_signing_keys.seal(raw, str(site.id).encode()),
        created_at=runtime.clock.now(),
        active=True,
    )
    repository = SigningKeyRepository(session)
    await repository.deactivate_all(site.id)
    await repository.add(record)
    # Keys older than any credential they could have signed are no longer published.
    await repository.retire_older_than(
        site.id, runtime.clock.now() - PASS_LIFETIME, runtime.clock.now()
    )
    return record


async def signer(
    session: AsyncSession, runtime: Runtime, site: Site
) -> tuple[str, Ed25519PrivateKey]:
    """The site's active signing key (made on first use): ``(kid, private key)``."""
    record = await SigningKeyRepository(session).active(site.id)
    if record is None:
        record = await new_signing_key(session, runtime, site)
    raw = runtime.keys.site_signing_keys.unseal(record.sealed_private_key, str(site.id).encode())
    return str(record.id), Ed25519PrivateKey.from_private_bytes(raw)


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def claims_for(
    key: Key,
    entrance_id: UUID,
    *,
    now: datetime,
    lifetime: timedelta,
    zone: ZoneInfo,
    credential_id: UUID,
    uses: int,
) -> dict[str, Any]:
    not_before = max(now, key.starts_at) if key.starts_at else now
    expires = min(now + lifetime, key.ends_at) if key.ends_at else now + lifetime
    claims: dict[str, Any] = {
        "iss": f"sesame:site:{key.site_id}",
        "sub": str(key.person_id),
        "key": str(key.id),
        "aud": str(entrance_id),
        "jti": str(credential_id),
        "nbf": _epoch(not_before),
        "exp": _epoch(expires),
        "uses": uses,
    }
    schedule = Schedule.parse(key.schedule)
    if schedule is not None:
        claims["sch"] = [
            [_epoch(a), _epoch(b)] for a, b in schedule.intervals(not_before, expires, zone)
        ]
    return claims


def issued_message(key: Key, tokens: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``credential.issued`` event: which credentials exist for which doors and until
    when — never the tokens themselves."""
    return outbox.message(
        "credential.issued",
        partner_id=key.partner_id,
        aggregate_id=key.id,
        site_id=key.site_id,
        key_id=key.id,
        person_id=key.person_id,
        credentials=[
            {
                "id": token["credential_id"],
                "entrance_id": token["entrance_id"],
                **({"expires_at": token["expires_at"]} if "expires_at" in token else {}),
                **({"uses": token["uses"]} if "uses" in token else {}),
            }
            for token in tokens
        ],
    )


def sign(kid: str, private: Ed25519PrivateKey, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": kid, "typ": TOKEN_TYPE})


async def mobile_credentials(
    session: AsyncSession,
    runtime: Runtime,
    key: Key,
    site: Site,
    places: list[Place],
    *,
    per_entrance: int,
) -> list[dict[str, Any]]:
    """A batch of single-use tokens for each entrance the key opens."""
    kid, private = await signer(session, runtime, site)
    now = runtime.clock.now()
    zone = ZoneInfo(site.time_zone)
    issued = []
    for place in places:
        for _ in range(per_entrance):
            claims = claims_for(
                key,
                place.entrance_id,
                now=now,
                lifetime=MOBILE_LIFETIME,
                zone=zone,
                credential_id=uuid.uuid4(),
                uses=1,
            )
            issued.append(
                {
                    "entrance_id": place.entrance_id,
                    "credential_id": claims["jti"],
                    "expires_at": datetime.fromtimestamp(claims["exp"], now.tzinfo),
                    "token": sign(kid, private, claims),
                }
            )
    return issued


async def guest_pass(
    session: AsyncSession, runtime: Runtime, key: Key, site: Site, entrance_id: UUID
) -> str:
    """The guest's QR token: one credential for the pass's window and uses."""
    if key.pass_id is None:
        key.pass_id = uuid.uuid4()
    kid, private = await signer(session, runtime, site)
    now = runtime.clock.now()
    start = key.starts_at or now
    lifetime = (key.ends_at - start) if key.ends_at else PASS_LIFETIME
    claims = claims_for(
        key,
        entrance_id,
        now=start,
        lifetime=min(lifetime, PASS_LIFETIME),
        zone=ZoneInfo(site.time_zone),
        credential_id=key.pass_id,
        uses=key.max_uses or 1,
    )
    return sign(kid, private, claims)


def qr(token: str, kind: str) -> bytes:
    """The token as a QR code image, ``png`` or ``svg``."""
    code = segno.make(token, error="m")
    buffer = io.BytesIO()
    code.save(buffer, kind=kind, scale=4, border=2)
    return buffer.getvalue()


async def trust_document(
    session: AsyncSession, runtime: Runtime, site: Site, entrance_id: UUID | None
) -> protocol.TrustDocument:
    signing = SigningKeyRepository(session)
    if await signing.active(site.id) is None:
        await new_signing_key(session, runtime, site)
    keys = [
        protocol.TrustedKey(kid=str(k.id), x=k.public_key) for k in await signing.published(site.id)
    ]
    blocked = await KeyRepository(session).blocked_since(
        site.id, runtime.clock.now() - BLOCK_WINDOW
    )
    return protocol.TrustDocument(
        version=int(time.time() * 1000),
        site_id=site.id,
        entrance_id=entrance_id,
        keys=keys,
        revoked_keys=list(blocked),
    )


def public_key_from(x: str) -> Ed25519PublicKey:
    from sesame.kit.security import unb64url

    return Ed25519PublicKey.from_public_bytes(unb64url(x))
