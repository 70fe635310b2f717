"""C2SP signed notes, checkpoints and witness cosignatures (Ed25519).

- A **note** is UTF-8 text ending in a newline, a blank line, then signature lines
  ``— <key name> base64(key ID ‖ signature)``. The key ID is
  SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]; type 0x01 is a plain Ed25519 signature of
  the text, type 0x04 a witness cosignature (c2sp.org/tlog-cosignature): an 8-byte
  big-endian timestamp and an Ed25519 signature of ``cosignature/v1\\ntime <t>\\n`` + text.
- A **checkpoint** (c2sp.org/tlog-checkpoint) is a note whose text is the log's origin,
  its size in decimal and its root hash in base64, one per line.
- A **verifier key** (vkey) is ``<name>+<key ID in hex>+<base64(type ‖ public key)>``:
  everything a client needs to check a signature, in one string.

Verification ignores signatures from keys it was not given, rejects the note if a known
key's signature fails, and requires at least one known signature to verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = 0x01
COSIGNATURE = 0x04
DASH = "\u2014"
MAX_SIGNATURES = 64


class NoteError(ValueError):
    """A note, checkpoint or key that is malformed or does not verify."""


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, kind: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public).digest()[:4]


def _check_name(name: str) -> str:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"invalid key name {name!r}")
    return name


@dataclass(frozen=True)
class Verifier:
    """A public key that may have signed a note: a log key (0x01) or a witness (0x04)."""

    name: str
    kind: int
    public: bytes

    @cached_property
    def id(self) -> bytes:
        return key_id(self.name, self.kind, self.public)

    @property
    def vkey(self) -> str:
        material = base64.b64encode(bytes([self.kind]) + self.public).decode()
        return f"{self.name}+{self.id.hex()}+{material}"

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        try:
            name, hex_id, material = vkey.strip().split("+", 2)
            raw = base64.b64decode(material, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise NoteError(f"not a verifier key: {vkey[:80]!r}") from exc
        if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE):
            raise NoteError("only Ed25519 verifier keys (types 0x01 and 0x04) are supported")
        verifier = cls(_check_name(name), raw[0], raw[1:])
        if verifier.id.hex() != hex_id.lower():
            raise NoteError(f"the key ID of {name} does not match its key")
        return verifier

    def check(self, text: str, signature: bytes) -> int | None:
        """The signature's timestamp (0 for a plain signature) if it verifies, else None."""
        public = Ed25519PublicKey.from_public_bytes(self.public)
        if self.kind == COSIGNATURE:
            if len(signature) != 8 + 64:
                return None
            timestamp = int.from_bytes(signature[:8], "big")
            message = f"cosignature/v1\ntime {timestamp}\n{text}".encode()
            signature = signature[8:]
        else:
            timestamp, message = 0, text.encode()
        try:
            public.verify(signature, message)
        except InvalidSignature:
            return None
        return timestamp


@dataclass(frozen=True)
class Signer:
    """A private key that signs notes (0x01) or cosigns checkpoints (0x04)."""

    name: str
    private: Ed25519PrivateKey
    kind: int = ED25519

    @cached_property
    def verifier(self) -> Verifier:
        return Verifier(_check_name(self.name), self.kind, _raw(self.private.public_key()))

    def signature_line(self, text: str, timestamp: int | None = None) -> str:
        if self.kind == COSIGNATURE:
            if timestamp is None or not 0 <= timestamp < 2**63:
                raise NoteError("a cosignature needs a timestamp")
            message = f"cosignature/v1\ntime {timestamp}\n{text}".encode()
            raw = struct.pack(">Q", timestamp) + self.private.sign(message)
        else:
            raw = self.private.sign(text.encode())
        encoded = base64.b64encode(self.verifier.id + raw).decode()
        return f"{DASH} {self.name} {encoded}\n"


@dataclass(frozen=True)
class SignatureLine:
    name: str
    key_id: bytes
    signature: bytes
    line: str


@dataclass
class Note:
    text: str
    signatures: list[SignatureLine] = field(default_factory=list)

    def __str__(self) -> str:
        return self.text + "\n" + "".join(s.line for s in self.signatures)


def parse(note: str) -> Note:
    """Split a note into its text and signature lines, checking the format only."""
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("a note may not contain control characters")
    if not note.endswith("\n"):
        raise NoteError("a note ends with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("a note needs a blank line before its signatures")
    text, block = note[: cut + 1], note[cut + 2 :]
    lines = block.splitlines(keepends=True)
    if not lines or len(lines) > MAX_SIGNATURES:
        raise NoteError("a note carries 1 to 64 signatures")
    signatures = []
    for line in lines:
        parts = line.rstrip("\n").split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise NoteError(f"malformed signature line {line[:80]!r}")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except binascii.Error as exc:
            raise NoteError("a signature is not base64") from exc
        if len(raw) < 5:
            raise NoteError("a signature is too short")
        signatures.append(SignatureLine(_check_name(parts[1]), raw[:4], raw[4:], line))
    return Note(text, signatures)


@dataclass(frozen=True)
class Verified:
    verifier: Verifier
    timestamp: int
    line: str


def verify(note: str | Note, verifiers: Sequence[Verifier]) -> tuple[Note, list[Verified]]:
    """The note and the signatures of known keys, all of which verified. Raises if any
    known key's signature fails, or none is present."""
    parsed = parse(note) if isinstance(note, str) else note
    known = {(v.name, v.id): v for v in verifiers}
    verified = []
    for signature in parsed.signatures:
        verifier = known.get((signature.name, signature.key_id))
        if verifier is None:
            continue
        timestamp = verifier.check(parsed.text, signature.signature)
        if timestamp is None:
            raise NoteError(f"the signature of {signature.name} does not verify")
        verified.append(Verified(verifier, timestamp, signature.line))
    if not verified:
        raise NoteError("no signature from a trusted key")
    return parsed, verified


# -- checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "".join(line + "\n" for line in [*lines, *self.extensions])

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not lines[0]:
            raise NoteError("a checkpoint has an origin, a size and a root hash, one a line")
        size_line = lines[1]
        if not (size_line.isascii() and size_line.isdigit()) or (
            size_line != "0" and size_line.startswith("0")
        ):
            raise NoteError("a checkpoint's size is a decimal without leading zeros")
        try:
            root = base64.b64decode(lines[2], validate=True)
        except binascii.Error as exc:
            raise NoteError("a checkpoint's root hash is base64") from exc
        if len(root) != 32:
            raise NoteError("a checkpoint's root hash is 32 bytes")
        return cls(lines[0], int(size_line), root, tuple(lines[3:-1]))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    return checkpoint.text + "\n" + signer.signature_line(checkpoint.text)


def open_checkpoint(
    note: str, log: Verifier, witnesses: Sequence[Verifier] = ()
) -> tuple[Checkpoint, list[Verified]]:
    """A checkpoint signed by ``log``, with the witnesses' cosignatures that verify."""
    parsed, verified = verify(note, [log, *witnesses])
    if not any(v.verifier == log for v in verified):
        raise NoteError("the checkpoint is not signed by the log's key")
    checkpoint = Checkpoint.parse(parsed.text)
    if checkpoint.origin != log.name:
        raise NoteError(f"the checkpoint is for {checkpoint.origin}, not {log.name}")
    return checkpoint, [v for v in verified if v.verifier != log]
