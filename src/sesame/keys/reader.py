"""How a reader decides on a credential alone, with no server: the reference implementation.

The simulated readers use it; ``docs/protocol.md`` describes the same steps for device
makers. The order matters: the cheap checks that need no cryptography come after the
signature, so that a forged token learns nothing, and the replay count is taken last, so
that a refused token does not use up an admission.

0. With no trust document, or one that names no entrance, refuse everything (``no_trust``).
1. Split the compact JWS; the header must be a JSON object with ``typ``
   ``sesame-access+jwt`` (``malformed`` otherwise, as for anything that does not parse);
   its ``kid`` must be a key of the reader's trust document and ``alg`` EdDSA, and the
   Ed25519 signature over ``header.payload`` must verify (``invalid_signature``).
2. The claims must be a JSON object with every required claim of the right type
   (``malformed`` otherwise): ``iss``, ``aud``, ``key``, ``jti`` strings, ``nbf`` and
   ``exp`` integers, ``uses`` (1 when absent) an integer of at least 1, ``sch`` (optional)
   a list of ``[from, until]`` integer pairs.
3. ``iss`` is the reader's site, ``aud`` the reader's entrance.
4. ``nbf`` ≤ now < ``exp`` by the reader's clock, with no leeway, and, if ``sch`` is
   present, ``from`` ≤ now < ``until`` for one of its intervals.
5. ``key`` is not on the trust document's blocked list.
6. The ``jti`` has been admitted fewer than ``uses`` times here (a replay otherwise).
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
from sesame.keys.credentials import TOKEN_TYPE, public_key_from

REPLAY_MEMORY = 100_000


class Verdict:
    GRANTED = "granted"
    NO_TRUST = "no_trust"
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
    def __init__(self, trust: ReaderTrust | None = None) -> None:
        self.trust = trust
        self._admitted: OrderedDict[str, tuple[int, int]] = OrderedDict()  # jti -> (count, exp)

    def update(self, document: protocol.TrustDocument) -> bool:
        """Take a newer trust document; False for a stale one."""
        if self.trust is not None and document.version < self.trust.version:
            return False
        self.trust = ReaderTrust.of(document)
        return True

    def decide(self, token: str, now: float) -> Decision:
        """``now``: the reader's clock, Unix seconds."""
        trust = self.trust
        if trust is None or not trust.entrance_id:
            return Decision(False, Verdict.NO_TRUST)
        try:
            head, body, signature = token.split(".")
            header = orjson.loads(_b64(head))
            if not isinstance(header, dict) or header.get("typ") != TOKEN_TYPE:
                return Decision(False, Verdict.MALFORMED)
            public = trust.keys.get(str(header.get("kid", "")))
            if public is None or header.get("alg") != "EdDSA":
                return Decision(False, Verdict.BAD_SIGNATURE)
            public.verify(_b64(signature), f"{head}.{body}".encode())
            claims = orjson.loads(_b64(body))
        except InvalidSignature:
            return Decision(False, Verdict.BAD_SIGNATURE)
        except (ValueError, TypeError, AttributeError):
            return Decision(False, Verdict.MALFORMED)
        if not _well_formed(claims):
            return Decision(False, Verdict.MALFORMED)
        verdict = self._check(trust, claims, now)
        return Decision(verdict == Verdict.GRANTED, verdict, claims)

    def _check(self, trust: ReaderTrust, claims: dict[str, Any], now: float) -> str:
        if claims["iss"] != f"sesame:site:{trust.site_id}":
            return Verdict.WRONG_SITE
        if claims["aud"] != trust.entrance_id:
            return Verdict.WRONG_ENTRANCE
        if now < claims["nbf"]:
            return Verdict.NOT_YET_VALID
        if now >= claims["exp"]:
            return Verdict.EXPIRED
        intervals = claims.get("sch")
        if intervals is not None and not any(a <= now < b for a, b in intervals):
            return Verdict.OUTSIDE_SCHEDULE
        if claims["key"] in trust.blocked:
            return Verdict.REVOKED
        jti = claims["jti"]
        count, _ = self._admitted.get(jti, (0, 0))
        if count >= claims.get("uses", 1):
            return Verdict.REPLAYED
        self._admitted[jti] = (count + 1, claims["exp"])
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


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _well_formed(claims: Any) -> bool:
    """Every claim a decision reads is there, with its type; ``uses`` defaults to 1."""
    if not isinstance(claims, dict):
        return False
    if not all(isinstance(claims.get(name), str) for name in ("iss", "aud", "key", "jti")):
        return False
    if not (_integer(claims.get("nbf")) and _integer(claims.get("exp"))):
        return False
    uses = claims.get("uses", 1)
    if not _integer(uses) or uses < 1:
        return False
    intervals = claims.get("sch")
    return intervals is None or (
        isinstance(intervals, list)
        and all(
            isinstance(pair, list) and len(pair) == 2 and all(map(_integer, pair))
            for pair in intervals
        )
    )
