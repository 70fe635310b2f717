"""Ledger entries: their bytes are RFC 8785 (JCS) canonical JSON, checked against an
independent JCS implementation, and their signatures catch any change."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from sesame.ledger import entries
from sesame.ledger.note import Signer

P1, P3 = str(uuid.UUID(int=11)), str(uuid.UUID(int=13))
SIGNER = Signer("sesame.example/ledger", Ed25519PrivateKey.generate())
KEYS = st.text(alphabet=st.characters(codec="ascii"), max_size=12)
# Fields ``key.used`` records whose values are not limited to codes.
FREE_FIELDS = st.sampled_from(sorted(entries.FIELDS["key.used"] - entries.CODES.keys()))
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(max_size=20),  # any Unicode, control characters included
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=20,
)


def sealed(entry: dict[str, Any], index: int = 7) -> bytes:
    return entries.seal(entry, index, entries.sign(entry, SIGNER), SIGNER.verifier)


def entry(payload: dict[str, Any], topic: str = "key.used") -> dict[str, Any]:
    return entries.build(
        topic=topic,
        at=datetime(2026, 11, 27, 9, 41, 3, 512345, tzinfo=UTC),
        partner_id=uuid.UUID(int=1),
        aggregate_id=uuid.UUID(int=2),
        payload=payload,
    )


@settings(max_examples=120, deadline=None)
@given(st.dictionaries(FREE_FIELDS, VALUES, max_size=6))
def test_entry_bytes_are_jcs(payload: dict[str, Any]) -> None:
    body = sealed(entry(payload))
    assert body == rfc8785.dumps(entries.parse(body))


def test_an_entry_records_opaque_ids_and_a_verifiable_signature() -> None:
    body = sealed(
        entry(
            {
                "actor": {"kind": "device", "id": str(uuid.UUID(int=3))},
                "site_id": str(uuid.UUID(int=4)),
                "credential_id": str(uuid.UUID(int=5)),
                "max_uses": 2**60,
                "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
                "name": "Kim's front door",
                "phone": "+821012345678",
            }
        )
    )
    value = entries.parse(body)
    assert value["type"] == "key.used"
    assert value["index"] == 7
    assert value["at"] == "2026-11-27T09:41:03.512345Z"
    assert value["subject"] == {"key": str(uuid.UUID(int=2))}
    assert value["site"] == str(uuid.UUID(int=4))
    assert value["actor"] == {"kind": "device", "id": str(uuid.UUID(int=3))}
    assert value["data"]["max_uses"] == str(2**60)  # beyond 2^53 it would not survive JSON
    assert value["data"]["occurred_at"] == "2026-01-01T00:00:00.000000Z"
    assert "name" not in value["data"]  # labels and contact details never enter the log
    assert "phone" not in value["data"]
    assert value["sig"]["kid"] == SIGNER.verifier.id.hex()
    assert entries.signature_ok(value, SIGNER.verifier)

    changed = {**value, "data": {**value["data"], "credential_id": "c2"}}
    assert not entries.signature_ok(changed, SIGNER.verifier)
    # The position is not signed (it is bound by the tree): a moved entry still verifies
    # on its own, and the audit's position check and the root catch the move.
    assert entries.signature_ok({**value, "index": 8}, SIGNER.verifier)
    other = Signer("sesame.example/ledger", Ed25519PrivateKey.generate()).verifier
    assert not entries.signature_ok(value, other)
    broken = {**value, "sig": {**value["sig"], "ed25519": base64.b64encode(bytes(64)).decode()}}
    assert not entries.signature_ok(broken, SIGNER.verifier)


def test_a_credential_is_recorded_under_its_key() -> None:
    value = entry({"key_id": str(uuid.UUID(int=9)), "credential_id": "c1"}, "credential.issued")
    assert value["subject"] == {"key": str(uuid.UUID(int=9))}
    assert "key_id" not in value["data"]


def test_each_topic_keeps_only_its_listed_fields_and_codes() -> None:
    before = dropped("key.revoked", "reason=<not a code>")
    value = entry(
        {
            "actor": {"kind": "resident", "person": P1, "persons": [P1, P3], "phone": "x"},
            "person_id": P3,
            "reason": "revoked by resident:+821012345678",
            "label": "Kim's key",
        },
        "key.revoked",
    )
    assert value["actor"] == {"kind": "resident", "person": P1}
    assert value["data"] == {"person_id": P3}  # free text and unlisted fields are gone
    assert dropped("key.revoked", "reason=<not a code>") == before + 1
    coded = entry({"reason": "revoked_by_resident", "method": "remote"}, "key.revoked")
    assert coded["data"] == {"reason": "revoked_by_resident"}  # no method on a revocation
    issued = entry(
        {
            "key_id": P1,
            "credentials": [
                {"id": P3, "uses": 1, "token": "secret"},
                {"id": "+821012345678", "uses": 1},
            ],
        },
        "credential.issued",
    )
    assert issued["data"] == {"credentials": [{"id": P3, "uses": 1}, {"uses": 1}]}
    # Identifiers are UUIDs: a device cannot slip text into the log through one.
    used = entry({"credential_id": "call +821012345678", "device_id": P1})
    assert used["data"] == {"device_id": P1}
    odd = entry({"actor": {"kind": "hacker", "id": "+821012345678"}})
    assert odd["actor"] == {"kind": "system"}


def test_a_topic_without_an_allow_list_is_refused() -> None:
    with pytest.raises(entries.UnlistedTopic):
        entry({"person_id": "p"}, "person.created")


def dropped(topic: str, field: str) -> float:
    value = REGISTRY.get_sample_value(
        "sesame_ledger_fields_dropped_total", {"topic": topic, "field": field}
    )
    return value or 0.0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1,2]",
        b'{"b":1,"a":2}',
        b'{"a": 1}',
        b'{"a":1.0}',
        b'{"a":9007199254740992}',
    ],
)
def test_non_canonical_bytes_are_refused(body: bytes) -> None:
    with pytest.raises(entries.EntryError):
        entries.parse(body)
