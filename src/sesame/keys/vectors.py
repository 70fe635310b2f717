"""Test vectors for readers: credentials and the verdict a conforming reader gives each.

A device maker checks a reader offline against ``docs/test-vectors/credentials.json``:
load its trust document, set the clock to each case's ``now``, present the case's tokens
in order to a reader with an empty replay memory, and compare each verdict. The tokens
are signed with the fixed, public test keys of ``docs/test-vectors/test-keys.json`` —
test material, never to be trusted by a deployed reader.

The expected verdicts are written here by hand, from the rules of ``docs/protocol.md``
(section 10), not computed by the reference reader; a test runs the reference reader
(``sesame.keys.reader``, the code the simulated readers run) over every case, so the
rules, the reader and the vectors cannot drift apart. ``sesame protocol docs`` rewrites
the file from this module and the test keys; the document test fails when it is stale.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sesame.devices import protocol
from sesame.keys.credentials import TOKEN_TYPE, sign
from sesame.kit.security import unb64url

KEYS_FILE = "test-keys.json"
VECTORS_FILE = "credentials.json"

SITE = UUID("00000000-0000-7000-8000-000000005173")
OTHER_SITE = UUID("00000000-0000-7000-8000-00000000071e")
ENTRANCE = UUID("00000000-0000-7000-8000-00000000e471")
OTHER_ENTRANCE = UUID("00000000-0000-7000-8000-00000000e472")
HOLDER = UUID("00000000-0000-7000-8000-0000000000a1")
KEY = UUID("00000000-0000-7000-8000-00000000000b")
REVOKED_KEY = UUID("00000000-0000-7000-8000-00000000dead")
NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
TRUST_VERSION = 1_799_999_000_000


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    presented: list[tuple[str, str]]  # (token, expected reason: "granted" or a refusal)
    now: int = NOW
    trust: bool = True  # False: the reader has no trust document yet


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(credential_id: str, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": f"sesame:site:{SITE}",
        "sub": str(HOLDER),
        "key": str(KEY),
        "aud": str(ENTRANCE),
        "jti": credential_id,
        "nbf": NOW - 3600,
        "exp": NOW + 3600,
        "uses": 1,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    """A token built by hand (a wrong header, a forged signature)."""
    head = _b64(json.dumps(header, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}.{_b64(signature)}"


def _private(entry: dict[str, str]) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(unb64url(entry["d"]))


def trust_document(keys: dict[str, Any]) -> protocol.TrustDocument:
    return protocol.TrustDocument(
        version=TRUST_VERSION,
        site_id=SITE,
        entrance_id=ENTRANCE,
        keys=[protocol.TrustedKey(kid=keys["site_key"]["kid"], x=keys["site_key"]["x"])],
        revoked_keys=[REVOKED_KEY],
    )


def cases(keys: dict[str, Any]) -> list[Case]:
    site_kid, site = keys["site_key"]["kid"], _private(keys["site_key"])
    other_kid, other = keys["unknown_key"]["kid"], _private(keys["unknown_key"])

    def token(credential_id: str, **changes: Any) -> str:
        return sign(site_kid, site, _claims(credential_id, **changes))

    good = token("00000000-0000-7000-8000-000000000001")
    guest = token("00000000-0000-7000-8000-000000000002", nbf=NOW - 60, exp=NOW + 86_400, uses=2)
    once = token("00000000-0000-7000-8000-000000000004", uses=None)
    header = {"alg": "EdDSA", "kid": site_kid, "typ": TOKEN_TYPE}
    forged_claims = _claims("00000000-0000-7000-8000-000000000003")
    forged_body = _b64(json.dumps(forged_claims, separators=(",", ":")).encode())
    forged_head = _b64(json.dumps(header, separators=(",", ":")).encode())
    forged = other.sign(f"{forged_head}.{forged_body}".encode())
    tampered_claims = _claims("00000000-0000-7000-8000-000000000001", exp=NOW + 86_400)
    tampered = ".".join(
        [
            good.split(".")[0],
            _b64(json.dumps(tampered_claims, separators=(",", ":")).encode()),
            good.split(".")[2],
        ]
    )
    return [
        Case("granted", "A phone's single-use credential, in date.", [(good, "granted")]),
        Case(
            "replayed",
            "The same single-use credential presented twice: the second is a replay.",
            [(good, "granted"), (good, "replayed")],
        ),
        Case(
            "guest_pass_uses",
            "A guest pass with `uses` 2: admitted twice, then a replay.",
            [(guest, "granted"), (guest, "granted"), (guest, "replayed")],
        ),
        Case(
            "uses_default",
            "No `uses` claim: it counts as 1.",
            [(once, "granted"), (once, "replayed")],
        ),
        Case(
            "no_trust",
            "A reader that has received no trust document refuses everything.",
            [(good, "no_trust")],
            trust=False,
        ),
        Case(
            "nbf_is_inclusive",
            "`nbf` equal to the reader's clock: valid (no leeway either way).",
            [(token("00000000-0000-7000-8000-000000000005", nbf=NOW), "granted")],
        ),
        Case(
            "not_yet_valid",
            "`nbf` one second after the reader's clock: no leeway.",
            [
                (
                    token("00000000-0000-7000-8000-000000000006", nbf=NOW + 1),
                    "credential_not_yet_valid",
                )
            ],
        ),
        Case(
            "exp_is_exclusive",
            "`exp` equal to the reader's clock: expired.",
            [(token("00000000-0000-7000-8000-000000000007", exp=NOW), "credential_expired")],
        ),
        Case(
            "inside_schedule",
            "`sch` interval starting now: `from` is inclusive.",
            [
                (
                    token(
                        "00000000-0000-7000-8000-000000000008",
                        sch=[[NOW - 7200, NOW - 3600], [NOW, NOW + 60]],
                    ),
                    "granted",
                )
            ],
        ),
        Case(
            "outside_schedule",
            "`sch` interval ending now: `until` is exclusive.",
            [
                (
                    token("00000000-0000-7000-8000-000000000009", sch=[[NOW - 60, NOW]]),
                    "outside_schedule",
                )
            ],
        ),
        Case(
            "key_revoked",
            "The credential's `key` is in the trust document's `revoked_keys`.",
            [(token("00000000-0000-7000-8000-00000000000a", key=str(REVOKED_KEY)), "key_revoked")],
        ),
        Case(
            "wrong_site",
            "`iss` names another site (signed by a key the reader trusts).",
            [
                (
                    token("00000000-0000-7000-8000-00000000000b", iss=f"sesame:site:{OTHER_SITE}"),
                    "wrong_site",
                )
            ],
        ),
        Case(
            "wrong_entrance",
            "`aud` is another entrance.",
            [
                (
                    token("00000000-0000-7000-8000-00000000000c", aud=str(OTHER_ENTRANCE)),
                    "wrong_entrance",
                )
            ],
        ),
        Case(
            "unknown_kid",
            "Signed by a key the trust document does not list.",
            [
                (
                    sign(other_kid, other, _claims("00000000-0000-7000-8000-00000000000d")),
                    "invalid_signature",
                )
            ],
        ),
        Case(
            "forged_signature",
            "Names the site's `kid` but is signed by another key.",
            [(f"{forged_head}.{forged_body}.{_b64(forged)}", "invalid_signature")],
        ),
        Case(
            "tampered_claims",
            "A genuine token whose claims were changed after signing.",
            [(tampered, "invalid_signature")],
        ),
        Case(
            "alg_none",
            "`alg` is not EdDSA.",
            [
                (
                    _unsigned(
                        {"alg": "none", "kid": site_kid, "typ": TOKEN_TYPE}, forged_claims, b""
                    ),
                    "invalid_signature",
                )
            ],
        ),
        Case(
            "wrong_typ",
            "A JWS that is not a Sesame credential (`typ` is not `sesame-access+jwt`).",
            [
                (
                    jwt_with_header(site_kid, site, forged_claims, typ="JWT"),
                    "malformed",
                )
            ],
        ),
        Case(
            "missing_claim",
            "Signed, but without a `jti`: a reader cannot count it.",
            [(sign(site_kid, site, _claims("", jti=None)), "malformed")],
        ),
        Case(
            "zero_uses",
            "`uses` below 1.",
            [(token("00000000-0000-7000-8000-00000000000f", uses=0), "malformed")],
        ),
        Case("not_a_token", "Not a compact JWS at all.", [("hello", "malformed")]),
    ]


def jwt_with_header(kid: str, private: Ed25519PrivateKey, claims: dict[str, Any], typ: str) -> str:
    header = {"alg": "EdDSA", "kid": kid, "typ": typ}
    head = _b64(json.dumps(header, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}.{_b64(private.sign(f'{head}.{body}'.encode()))}"


def load_keys(directory: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((directory / KEYS_FILE).read_text())
    return loaded


def render(directory: Path) -> str:
    """The vectors file, from the test keys in ``directory``."""
    keys = load_keys(directory)
    document = {
        "_comment": (
            "TEST VECTORS, signed with the public test keys of test-keys.json: never trust "
            "those keys in a deployment. For each case: a reader with an empty replay "
            "memory, holding `trust` (or none when `trust` is false), its clock at `now` "
            "(Unix seconds), is shown each token in order and must give each `expected` "
            "verdict. See docs/protocol.md, section 10."
        ),
        "trust": json.loads(protocol.encode(trust_document(keys))),
        "cases": [
            {
                "name": case.name,
                "description": case.description,
                "now": case.now,
                "trust": case.trust,
                "presented": [
                    {"token": token, "expected": expected} for token, expected in case.presented
                ],
            }
            for case in cases(keys)
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def update(directory: Path) -> bool:
    path = directory / VECTORS_FILE
    text = render(directory)
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def is_current(directory: Path) -> bool:
    path = directory / VECTORS_FILE
    return path.exists() and path.read_text() == render(directory)
