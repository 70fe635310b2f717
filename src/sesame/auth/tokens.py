"""Short-lived access tokens (JWT, HS256) naming a sign-in session.

The token says who and which session; whether that session is still live is checked on
every request, so logout and revocation take effect at once rather than at expiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

import jwt

from sesame.kit.errors import TokenExpired, Unauthorized

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
    key: bytes,
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
    return jwt.encode(claims, key, algorithm=ALGORITHM), expires_at


def decode_access_token(key: bytes, token: str, *, now: datetime) -> AccessClaims:
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            # Expiry is checked below against the injected clock.
            options={"verify_exp": False, "require": ["exp", "sub", "sid", "typ"]},
        )
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
