"""Short-lived access tokens (JWT, HS256) naming a sign-in session.

The token says who and which session; whether that session is still live is checked on
every request, so logout and revocation take effect at once rather than at expiry.

A token is signed with the current secret's key and names it in its ``kid`` header; it is
verified with the key it names, so tokens issued before a change of secret keep working
until they expire while the previous secret stays in the ring. A token from before key
ids existed has no ``kid`` and is tried with every key of the ring.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import jwt

from sesame.kit.errors import TokenExpired, Unauthorized
from sesame.kit.keyring import PurposeKeys

ISSUER = "sesame"
AUDIENCE = "sesame-api"
ALGORITHM = "HS256"

TokenKind = Literal["staff", "resident"]


@dataclass(frozen=True)
class AccessClaims:
    kind: TokenKind
    subject: str
    session_id: UUID
    expires_at: datetime


def issue_access_token(
    keys: PurposeKeys,
    *,
    kind: TokenKind,
    subject: str,
    session_id: UUID,
    now: datetime,
    ttl_seconds: int,
) -> tuple[str, datetime]:
    expires_at = now + timedelta(seconds=ttl_seconds)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "typ": kind,
        "sid": str(session_id),
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    token = jwt.encode(
        claims, keys.current.key, algorithm=ALGORITHM, headers={"kid": keys.current.key_id}
    )
    return token, expires_at


def _decode(token: str, key: bytes) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=[ALGORITHM],
        audience=AUDIENCE,
        issuer=ISSUER,
        # Expiry is checked by the caller against the injected clock.
        options={"verify_exp": False, "require": ["exp", "sub", "sid", "typ"]},
    )
    return claims


def _verified_claims(keys: PurposeKeys, token: str) -> dict[str, Any]:
    key_id = jwt.get_unverified_header(token).get("kid")
    if key_id is not None:
        named = keys.find(str(key_id))
        if named is None:
            raise jwt.InvalidKeyError("signed with a key that is not in the ring")
        return _decode(token, named.key)
    *others, last = keys.keys  # current first
    for candidate in others:
        with suppress(jwt.InvalidSignatureError):
            return _decode(token, candidate.key)
    return _decode(token, last.key)


def decode_access_token(keys: PurposeKeys, token: str, *, now: datetime) -> AccessClaims:
    try:
        claims = _verified_claims(keys, token)
        kind = claims["typ"]
        if kind not in ("staff", "resident"):
            raise Unauthorized("unknown token kind")
        session_id = UUID(claims["sid"])
        expires_at = datetime.fromtimestamp(int(claims["exp"]), tz=now.tzinfo)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise Unauthorized("invalid access token") from exc
    if expires_at <= now:
        raise TokenExpired("access token expired; refresh it")
    return AccessClaims(
        kind=kind, subject=str(claims["sub"]), session_id=session_id, expires_at=expires_at
    )
