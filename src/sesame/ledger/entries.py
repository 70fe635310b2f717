"""Ledger entries: which domain events are recorded, and their exact bytes.

An entry is a JSON object in the canonical form of RFC 8785 (JCS): keys sorted, no
insignificant whitespace, UTF-8. Values are limited to strings, integers of magnitude
below 2^53, booleans, null, objects and arrays — the subset where JCS is plain sorted compact JSON —
and anything else is written as a string, so any event can be recorded.

The log's Ed25519 key signs ``sesame-ledger-entry/v1\\n`` followed by the canonical bytes
of the entry without its ``index`` and ``sig`` members. The signature is made when the
event commits — by whichever process commits it, so signing is spread over every
process, not done by the one sequencer — and before the entry has a position; the
position is then bound by the Merkle tree and the signed checkpoints, as in Certificate
Transparency. The sequencer adds ``index`` and the signature as ``sig``, and the
canonical bytes of the whole object are what the log hashes.

    {"actor": {"id": "…", "kind": "staff", "role": "partner_admin"},
     "at": "2026-11-27T09:41:03.512345Z", "data": {…}, "index": 41,
     "partner": "…", "sig": {"ed25519": "…", "kid": "1f2e3d4c"}, "site": "…",
     "subject": {"key": "…"}, "type": "key.revoked", "v": 1}

Identifiers are opaque UUIDs; no names, phone numbers or codes are ever recorded.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sesame.ledger.note import Signer, Verifier

VERSION = 1
CONTEXT = b"sesame-ledger-entry/v1\n"
MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER

# Domain events the ledger records; the others (device events, attempts) stay in the outbox.
TOPICS = frozenset(
    {
        "key.issued",
        "key.shared",
        "key.activated",
        "key.suspended",
        "key.resumed",
        "key.revoked",
        "key.expired",
        "key.used",
        "credential.issued",
        "pin_code.set",
        "pin_code.removed",
        "pin_code.externally_modified",
        "device.provisioned",
        "device.decommissioned",
        "device.credentials_rotated",
    }
)
# Fields some domain events carry that an append-only public log must never hold (a log
# cannot forget): labels people type and contact details.
PRIVATE_FIELDS = frozenset({"name", "phone", "email", "display_name", "note"})
SUBJECTS = {"key": "key", "credential": "key", "pin_code": "pin_code", "device": "device"}


class EntryError(ValueError):
    """Bytes that are not a well-formed, canonical ledger entry."""


def _plain(value: Any) -> Any:
    """``value`` reduced to the supported types (exact type checks: this runs per field)."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return value
    if kind is dict:
        return {str(k): _plain(v) for k, v in value.items()}
    if kind is int:
        return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)
    if kind is list or kind is tuple:
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, bool | str):  # subclasses, such as a StrEnum
        return value if kind is bool else str(value)
    if isinstance(value, int):
        return _plain(int(value))
    if isinstance(value, dict):
        return _plain(dict(value))
    return str(value)


def canonical(value: dict[str, Any]) -> bytes:
    """JCS bytes of a value already reduced to the supported types."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds: ``2026-11-27T09:41:03.512345Z``."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def build(
    *,
    topic: str,
    at: datetime,
    partner_id: UUID | None,
    aggregate_id: UUID | None,
    payload: dict[str, Any],
) -> dict[str, Any]:
    """The entry for one outbox message, without its position and signature: exactly
    what is signed."""
    data = {k: v for k, v in payload.items() if k not in PRIVATE_FIELDS}
    actor = data.pop("actor", None) or {"kind": "system"}
    site = data.pop("site_id", None)
    noun = SUBJECTS.get(topic.split(".", 1)[0], topic.split(".", 1)[0])
    subject_id = str(aggregate_id) if aggregate_id else None
    if topic == "credential.issued":
        subject_id = str(data.pop("key_id", None) or subject_id)
    entry: dict[str, Any] = _plain(
        {
            "v": VERSION,
            "type": topic,
            "at": at,
            "partner": str(partner_id) if partner_id else None,
            "site": site,
            "subject": {noun: subject_id},
            "actor": actor,
            "data": data,
        }
    )
    return entry


def signed_message(entry: dict[str, Any]) -> bytes:
    """What the log's key signs for ``entry`` (built by ``build``)."""
    return CONTEXT + canonical(entry)


def sign(entry: dict[str, Any], signer: Signer) -> bytes:
    """The log's signature over ``entry`` (built by ``build``)."""
    return signer.private.sign(signed_message(entry))


def seal(entry: dict[str, Any], index: int, signature: bytes, log: Verifier) -> bytes:
    """The entry's bytes at ``index``, with the signature inside."""
    signed = {
        **entry,
        "index": index,
        "sig": {"kid": log.id.hex(), "ed25519": base64.b64encode(signature).decode()},
    }
    return canonical(signed)


def parse(body: bytes) -> dict[str, Any]:
    """Decode entry bytes, refusing any that are not in canonical form."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EntryError("not JSON") from exc
    if not isinstance(value, dict) or not _supported(value) or canonical(value) != body:
        raise EntryError("not a canonical entry")
    return value


def _supported(value: Any) -> bool:
    """Only the types whose JCS form is plain sorted JSON (no floats, no huge integers)."""
    if isinstance(value, dict):
        return all(_supported(v) for v in value.values())
    if isinstance(value, list):
        return all(_supported(v) for v in value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and abs(value) <= MAX_SAFE_INTEGER


def signature_ok(entry: dict[str, Any], log: Verifier) -> bool:
    """Whether the entry's ``sig`` is the log's signature over the rest of it."""
    sig = entry.get("sig")
    if not isinstance(sig, dict) or sig.get("kid") != log.id.hex():
        return False
    try:
        signature = base64.b64decode(sig.get("ed25519", ""), validate=True)
    except ValueError:
        return False
    unsigned = {k: v for k, v in entry.items() if k not in ("index", "sig")}
    try:
        Ed25519PublicKey.from_public_bytes(log.public).verify(signature, signed_message(unsigned))
    except InvalidSignature:
        return False
    return True
