"""How a reader decides on a credential alone, with no server: the reference implementation.

The simulated readers use it; ``docs/protocol.md`` describes the same steps for device
makers. The order matters: the cheap checks that need no cryptography come after the
signature, so that a forged token learns nothing, and the replay count is taken last, so
that a refused token does not use up an admission.

1. Split the compact JWS; the header's ``kid`` must be a key of the reader's trust
   document and ``alg`` EdDSA; the Ed25519 signature over ``header.payload`` must verify.
2. ``iss`` is the reader's site, ``aud`` the reader's entrance.
3. ``nbf`` ≤ now < ``exp`` by the reader's clock, and, if ``sch`` is present, now falls in
   one of its intervals.
4. ``key`` is not on the trust document's blocked list.
5. The ``jti`` has been admitted fewer than ``uses`` times here (a replay otherwise).
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sesame.devices import protocol
from sesame.keys.credentials import public_key_from

REPLAY_MEMORY = 100_000


class Verdict:
    GRANTED = "granted"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "invalid_signature"
    WRONG_SITE = "wrong_site"
    WRONG_ENTRANCE = "wrong_entrance"
    NOT_YET_VALID = "credential_not_yet_valid"
    EXPIRED = "credential_expired"
    OUTSIDE_SCHEDULE = "outside_schedule"
    REVOKED = "key_revoked"
    REPLAYED = "replayed"


@dataclass
class Decision:
    granted: bool
    reason: str
    claims: dict[str, Any] = field(default_factory=dict)


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@dataclass
class ReaderTrust:
    site_id: str
    entrance_id: str
    keys: dict[str, Ed25519PublicKey]
    blocked: frozenset[str]
    version: int

    @classmethod
    def of(cls, document: protocol.TrustDocument) -> ReaderTrust:
        return cls(
            site_id=str(document.site_id),
            entrance_id=str(document.entrance_id or ""),
            keys={k.kid: public_key_from(k.x) for k in document.keys},
            blocked=frozenset(str(k) for k in document.revoked_keys),
            version=document.version,
        )


class Reader:
    def __init__(self, trust: ReaderTrust) -> None:
        self.trust = trust
        self._admitted: OrderedDict[str, tuple[int, int]] = OrderedDict()  # jti -> (count, exp)

    def update(self, document: protocol.TrustDocument) -> bool:
        """Take a newer trust document; False for a stale one."""
        if document.version < self.trust.version:
            return False
        self.trust = ReaderTrust.of(document)
        return True

    def decide(self, token: str, now: float) -> Decision:
        """``now``: the reader's clock, Unix seconds."""
        try:
            head, body, signature = token.split(".")
            header = orjson.loads(_b64(head))
            public = self.trust.keys.get(header.get("kid", ""))
            if public is None or header.get("alg") != "EdDSA":
                return Decision(False, Verdict.BAD_SIGNATURE)
            public.verify(_b64(signature), f"{head}.{body}".encode())
            claims = orjson.loads(_b64(body))
        except InvalidSignature:
            return Decision(False, Verdict.BAD_SIGNATURE)
        except (ValueError, TypeError, AttributeError):
            return Decision(False, Verdict.MALFORMED)
        verdict = self._check(claims, now)
        return Decision(verdict == Verdict.GRANTED, verdict, claims)

    def _check(self, claims: dict[str, Any], now: float) -> str:
        if claims.get("iss") != f"sesame:site:{self.trust.site_id}":
            return Verdict.WRONG_SITE
        if claims.get("aud") != self.trust.entrance_id:
            return Verdict.WRONG_ENTRANCE
        if now < claims.get("nbf", 0):
            return Verdict.NOT_YET_VALID
        if now >= claims.get("exp", 0):
            return Verdict.EXPIRED
        intervals = claims.get("sch")
        if intervals is not None and not any(a <= now < b for a, b in intervals):
            return Verdict.OUTSIDE_SCHEDULE
        if claims.get("key") in self.trust.blocked:
            return Verdict.REVOKED
        jti = str(claims.get("jti"))
        count, _ = self._admitted.get(jti, (0, 0))
        if count >= int(claims.get("uses", 1)):
            return Verdict.REPLAYED
        self._admitted[jti] = (count + 1, int(claims["exp"]))
        self._admitted.move_to_end(jti)
        self._forget(now)
        return Verdict.GRANTED

    def _forget(self, now: float) -> None:
        """Drop expired credentials (they are refused by date anyway), and the oldest if
        memory is full."""
        while self._admitted:
            oldest, (_, expires) = next(iter(self._admitted.items()))
            if expires > now and len(self._admitted) <= REPLAY_MEMORY:
                break
            self._admitted.pop(oldest)
