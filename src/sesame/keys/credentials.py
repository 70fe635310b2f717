"""Credentials a door can check on its own: signed tokens, the trust readers hold, QR passes.

A credential is a JWS (compact form, EdDSA over Ed25519) signed with its site's signing
key. It names the key (``key``), the holder (``sub``), the one entrance it is for
(``aud``), its validity (``nbf``/``exp``, short), the UTC intervals a schedule allows
within it (``sch``), how many times it may be used at that entrance (``uses``), and its
own id (``jti``). A reader verifies it with nothing but the site's public keys and the
list of blocked keys, both pushed to it on the device protocol's ``trust`` channel, and
counts each ``jti`` it admits, so a copy presented again is a replay. The exact check is
in ``sesame.keys.reader`` and ``docs/protocol.md``.

A credential for a key given from another (a shared key, a guest pass) is bounded by its
whole lineage (``access.Terms``): it starts no earlier and ends no later than any of them,
and ``sch`` holds only the moments every schedule of the lineage allows.

Mobile credentials are issued in small batches of single-use tokens, one batch per
entrance, valid at most a day; a guest's QR pass is one token for its whole window and
number of uses, and stays the same for the pass's life (the same ``jti``).
"""

from __future__ import annotations

import io
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
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from sesame.devices import protocol
from sesame.keys.access import Place, Terms, covers, effective_status
from sesame.keys.repository import KeyRepository, SigningKeyRepository
from sesame.kit.logging import get_logger
from sesame.kit.security import b64url
from sesame.models import Key, KeyStatus, Site, SiteSigningKey
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime
from sesame.sites.repository import SiteRepository

TOKEN_TYPE = "sesame-access+jwt"  # noqa: S105 - a media type, not a secret
MOBILE_LIFETIME = timedelta(hours=24)
PASS_LIFETIME = timedelta(days=30)  # the longest a guest pass may run
# Blocked keys stay on readers' lists as long as any of their credentials may be valid,
# by a reader's clock that may lag the server's by this much.
READER_CLOCK_GRACE = timedelta(hours=1)
BLOCK_LIST_OVERFLOW = Counter(
    "sesame_trust_block_list_overflow_total",
    "Trust documents whose block list was cut at the protocol's limit",
)
log = get_logger("sesame.keys.credentials")
ENDED = (KeyStatus.REVOKED, KeyStatus.SUSPENDED, KeyStatus.EXPIRED)


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
    terms: Terms | None = None,
) -> dict[str, Any]:
    """``terms``: the key's lineage's (``Terms.of``); the key's own when left out."""
    terms = terms or Terms.of([key])
    not_before = max(now, terms.starts_at) if terms.starts_at else now
    expires = min(now + lifetime, terms.ends_at) if terms.ends_at else now + lifetime
    expires = max(expires, not_before)
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
    if terms.schedules:
        claims["sch"] = [
            [_epoch(a), _epoch(b)] for a, b in terms.intervals(not_before, expires, zone)
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
    """A batch of single-use tokens for each entrance the key and its lineage open."""
    lineage = await KeyRepository(session).lineage(key)
    now = runtime.clock.now()
    if any(effective_status(k, now) in ENDED for k in lineage[1:]):
        return []  # given from a key that no longer opens anything
    places = [p for p in places if all(covers(k, p) for k in lineage)]
    terms = Terms.of(lineage)
    kid, private = await signer(session, runtime, site)
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
                terms=terms,
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
    terms = Terms.of(await KeyRepository(session).lineage(key))
    start = terms.starts_at or key.starts_at or now
    lifetime = (terms.ends_at - start) if terms.ends_at else PASS_LIFETIME
    claims = claims_for(
        key,
        entrance_id,
        now=start,
        lifetime=min(lifetime, PASS_LIFETIME),
        zone=ZoneInfo(site.time_zone),
        credential_id=key.pass_id,
        uses=key.max_uses or 1,
        terms=terms,
    )
    return sign(kid, private, claims)


def qr(token: str, kind: str) -> bytes:
    """The token as a QR code image, ``png`` or ``svg``."""
    code = segno.make(token, error="m")
    buffer = io.BytesIO()
    code.save(buffer, kind=kind, scale=4, border=2)
    return buffer.getvalue()


async def trust_documents(
    session: AsyncSession, runtime: Runtime, site: Site, entrance_ids: list[UUID | None]
) -> list[protocol.TrustDocument]:
    """The trust document of each reader of the site (one per entrance id given), read
    once for all of them: the block list of a busy site is long."""
    signing = SigningKeyRepository(session)
    if await signing.active(site.id) is None:
        await new_signing_key(session, runtime, site)
    keys = [
        protocol.TrustedKey(kid=str(k.id), x=k.public_key) for k in await signing.published(site.id)
    ]
    limit = protocol.MAX_BLOCKED_KEYS
    blocked = list(
        await KeyRepository(session).blocked(
            site.id,
            runtime.clock.now(),
            mobile_lifetime=MOBILE_LIFETIME + READER_CLOCK_GRACE,
            limit=limit + 1,
            clock_grace=READER_CLOCK_GRACE,
        )
    )
    if len(blocked) > limit:
        # Beyond what a reader is required to hold: the keys blocked longest ago (whose
        # phones' credentials expire first) are left out, and that must be seen.
        BLOCK_LIST_OVERFLOW.inc()
        log.error("trust_block_list_over_limit", site_id=str(site.id), limit=limit)
        blocked = blocked[:limit]
    version = await trust_version(session, runtime, site.id)
    return [
        protocol.TrustDocument(
            version=version,
            site_id=site.id,
            entrance_id=entrance_id,
            keys=keys,
            revoked_keys=blocked,
        )
        for entrance_id in entrance_ids
    ]


async def trust_version(session: AsyncSession, runtime: Runtime, site_id: UUID) -> int:
    """The next trust document version of a site: it follows the wall clock (Unix ms)
    but never goes back, even when a server's clock does (``Site.trust_version``)."""
    floor = int(runtime.clock.now().timestamp() * 1000)
    return await SiteRepository(session).next_trust_version(site_id, floor)


def public_key_from(x: str) -> Ed25519PublicKey:
    from sesame.kit.security import unb64url

    return Ed25519PublicKey.from_public_bytes(unb64url(x))
