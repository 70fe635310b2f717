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

Identifiers are opaque UUIDs; no names, phone numbers or codes are ever recorded: each
topic keeps only the fields its allow-list (``FIELDS``) names, fields such as ``reason``
only with a value from a fixed set of codes, and the actor only its kind's opaque ids.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from prometheus_client import Counter

from sesame.kit.logging import get_logger
from sesame.ledger.note import Signer, Verifier
from sesame.models import (
    AccessMethod,
    DeviceKind,
    DeviceStatus,
    KeyKind,
    KeyReason,
    TargetKind,
)

log = get_logger("sesame.ledger")

VERSION = 1
CONTEXT = b"sesame-ledger-entry/v1\n"
MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER

# What the ledger records of each domain event, field by field: an append-only public log
# cannot forget, so nothing enters it unless listed here. Events of other topics (device
# events, attempts) stay in the outbox; a field not listed is dropped and counted.
_KEY = (
    "person_id",
    "kind",
    "target_kind",
    "unit_id",
    "building_id",
    "entrance_id",
    "starts_at",
    "ends_at",
    "max_uses",
    "parent_key_id",
    "schedule",  # weekly windows and their time zone: what a derived key is held to
)
_PIN = ("device_id", "key_id", "person_id", "slot")
_DEVICE = ("kind", "status")
FIELDS: dict[str, frozenset[str]] = {
    "key.issued": frozenset((*_KEY, "reason")),
    "key.shared": frozenset(_KEY),
    "key.activated": frozenset(_KEY),
    "key.suspended": frozenset(_KEY),
    "key.resumed": frozenset(_KEY),
    "key.revoked": frozenset((*_KEY, "reason")),
    "key.expired": frozenset(_KEY),
    "key.used": frozenset(
        (
            *_KEY,
            "method",
            "entrance_id_used",
            "action_attempt_id",
            "device_id",
            "credential_id",
            "occurred_at",
        )
    ),
    "credential.issued": frozenset({"key_id", "person_id", "credentials"}),
    "pin_code.set": frozenset(_PIN),
    "pin_code.removed": frozenset(_PIN),
    "pin_code.externally_modified": frozenset(_PIN),
    "device.provisioned": frozenset(_DEVICE),
    "device.decommissioned": frozenset(_DEVICE),
    "device.credentials_rotated": frozenset(_DEVICE),
}
TOPICS = frozenset(FIELDS)
# Fields inside a field: each credential of ``credential.issued``.
NESTED_FIELDS = {"credentials": frozenset({"id", "entrance_id", "expires_at", "uses"})}
# Fields whose value must be one of a few codes, never free text; another value is dropped.
CODES = {
    "reason": frozenset(reason.value for reason in KeyReason),
    "method": frozenset(method.value for method in AccessMethod),
    "kind": frozenset((*(k.value for k in KeyKind), *(k.value for k in DeviceKind))),
    "target_kind": frozenset(target.value for target in TargetKind),
    "status": frozenset(status.value for status in DeviceStatus),
}
# Who acted: the kinds of actor and what is kept of each (opaque ids and roles).
ACTOR_FIELDS = {
    "staff": frozenset({"kind", "id", "role"}),
    "api_key": frozenset({"kind", "id", "partner", "scopes"}),
    "resident": frozenset({"kind", "person"}),
    "device": frozenset({"kind", "id"}),
    "system": frozenset({"kind"}),
}
DROPPED = Counter(
    "sesame_ledger_fields_dropped_total",
    "Fields of domain events left out of the ledger because no allow-list names them",
    ["topic", "field"],
)
SUBJECTS = {"key": "key", "credential": "key", "pin_code": "pin_code", "device": "device"}


class EntryError(ValueError):
    """Bytes that are not a well-formed, canonical ledger entry."""


class UnlistedTopic(EntryError):
    """A domain event of a topic the ledger has no allow-list for: it is never recorded."""


_warned: set[tuple[str, str]] = set()


def _dropped(topic: str, field: str) -> None:
    """Count a field left out; say so once per process and field, so a new field that
    should be recorded is noticed, without a line per event."""
    DROPPED.labels(topic=topic, field=field).inc()
    if (topic, field) not in _warned:
        _warned.add((topic, field))
        log.warning("ledger_field_dropped", topic=topic, field=field)


def _is_id(field: str) -> bool:
    return field == "id" or field.endswith("_id")


def _opaque(value: Any) -> bool:
    """An identifier field holds a UUID (or nothing), never text a device or person chose."""
    if value is None or isinstance(value, UUID):
        return True
    try:
        UUID(str(value))
    except ValueError:
        return False
    return True


def _kept(topic: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``payload`` that the topic's allow-list names; coded ones only with a
    known code, identifiers only when they are UUIDs."""
    allowed = FIELDS[topic]
    data: dict[str, Any] = {}
    for field, value in payload.items():
        if field not in allowed:
            _dropped(topic, field)
        elif field in CODES and value is not None and str(value) not in CODES[field]:
            _dropped(topic, f"{field}=<not a code>")
        elif _is_id(field) and not _opaque(value):
            _dropped(topic, f"{field}=<not an id>")
        elif field in NESTED_FIELDS and isinstance(value, list):
            inner = NESTED_FIELDS[field]
            data[field] = [
                {k: v for k, v in item.items() if k in inner and (not _is_id(k) or _opaque(v))}
                for item in value
                if isinstance(item, dict)
            ]
        else:
            data[field] = value
    return data


def _actor(topic: str, actor: Any) -> dict[str, Any]:
    """Who acted, reduced to the opaque ids its kind allows; an unknown kind is ``system``."""
    if not isinstance(actor, dict) or actor.get("kind") not in ACTOR_FIELDS:
        if actor is not None:
            _dropped(topic, "actor")
        return {"kind": "system"}
    allowed = ACTOR_FIELDS[actor["kind"]]
    kept = {}
    for field, value in actor.items():
        if field in allowed and (field not in ("id", "person", "partner") or _opaque(value)):
            kept[field] = value
        else:
            _dropped(topic, f"actor.{field}")
    return kept


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
    what is signed. Only what the topic's allow-list names is kept; a topic without one
    is refused (``UnlistedTopic``)."""
    if topic not in FIELDS:
        raise UnlistedTopic(f"the ledger records no {topic!r} events")
    payload = dict(payload)
    actor = _actor(topic, payload.pop("actor", None))
    site = payload.pop("site_id", None)
    data = _kept(topic, payload)
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
