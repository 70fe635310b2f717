"""Signed notes and checkpoints (C2SP signed-note, tlog-checkpoint), checked against the
reference implementation's own test vector and against tampering."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sesame.ledger.note import (
    COSIGNATURE,
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    open_checkpoint,
    parse,
    sign_checkpoint,
    verify,
)

# golang.org/x/mod/sumdb/note's test key and signed note (note_test.go).
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvq"
    "fqdngotpRZb6KE6RyyBwJnAM=\n"
)
ORIGIN = "sesame.example/ledger"


def test_the_reference_implementations_note_verifies_and_is_reproduced() -> None:
    verifier = Verifier.parse(GO_VKEY)
    assert verifier.name == "PeterNeumann"
    assert verifier.id.hex() == "c74f20a3"
    assert verifier.vkey == GO_VKEY
    parsed, verified = verify(GO_TEXT + "\n" + GO_SIGNATURE, [verifier])
    assert parsed.text == GO_TEXT
    assert [v.verifier for v in verified] == [verifier]

    signer = Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(GO_SEED))
    assert signer.verifier == verifier
    assert signer.signature_line(GO_TEXT) == GO_SIGNATURE  # Ed25519 is deterministic


def test_a_changed_text_or_signature_is_refused() -> None:
    verifier = Verifier.parse(GO_VKEY)
    with pytest.raises(NoteError):
        verify(GO_TEXT.replace("answer", "ANSWER") + "\n" + GO_SIGNATURE, [verifier])
    raw = bytearray(base64.b64decode(GO_SIGNATURE.split(" ")[2]))
    raw[10] ^= 1
    forged = f"\u2014 PeterNeumann {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(NoteError, match="does not verify"):
        verify(GO_TEXT + "\n" + forged, [verifier])
    other = Signer("PeterNeumann", Ed25519PrivateKey.generate()).verifier
    with pytest.raises(NoteError, match="no signature from a trusted key"):
        verify(GO_TEXT + "\n" + GO_SIGNATURE, [other])  # same name, another key ID


@pytest.mark.parametrize(
    "note",
    [
        "text\n\u2014 a b\n",  # no blank line
        "text\n\n",  # no signature
        "text\n\n\u2014 a !!!\n",  # not base64
        "text\n\n\u2014 a AAAA\n",  # too short
        "te\x01xt\n\n" + GO_SIGNATURE,  # control character
        GO_TEXT + "\n" + GO_SIGNATURE.rstrip("\n"),  # no final newline
    ],
)
def test_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(NoteError):
        parse(note)


def test_checkpoints_round_trip_with_witness_cosignatures() -> None:
    log = Signer(ORIGIN, Ed25519PrivateKey.generate())
    witness = Signer("witness.example/w1", Ed25519PrivateKey.generate(), COSIGNATURE)
    head = Checkpoint(ORIGIN, 1234, bytes(range(32)))
    assert head.text == f"{ORIGIN}\n1234\n{base64.b64encode(bytes(range(32))).decode()}\n"
    note = sign_checkpoint(head, log)
    cosigned = note + witness.signature_line(head.text, 1_790_000_000)

    checkpoint, cosignatures = open_checkpoint(cosigned, log.verifier, [witness.verifier])
    assert checkpoint == head
    assert [(c.verifier, c.timestamp) for c in cosignatures] == [(witness.verifier, 1_790_000_000)]
    assert Verifier.parse(witness.verifier.vkey) == witness.verifier

    # A cosignature over another checkpoint does not verify over this one.
    other = Checkpoint(ORIGIN, 1235, bytes(range(32)))
    stolen = note + witness.signature_line(other.text, 1_790_000_000)
    with pytest.raises(NoteError):
        open_checkpoint(stolen, log.verifier, [witness.verifier])
    # A note signed only by a witness is not the log's checkpoint.
    with pytest.raises(NoteError):
        open_checkpoint(
            head.text + "\n" + witness.signature_line(head.text, 1),
            log.verifier,
            [witness.verifier],
        )


@pytest.mark.parametrize(
    "text",
    [
        f"{ORIGIN}\n012\n{base64.b64encode(bytes(32)).decode()}\n",  # leading zero
        f"{ORIGIN}\n\u0661\n{base64.b64encode(bytes(32)).decode()}\n",  # non-ASCII digit
        f"{ORIGIN}\n12\n{base64.b64encode(bytes(31)).decode()}\n",  # short root
        f"{ORIGIN}\n12\n",  # no root
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text)
