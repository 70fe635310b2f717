"""The master secret and the older ones still accepted for reading: a key ring.

``SESAME_SECRET_KEY`` seals, signs and digests; the secrets in
``SESAME_SECRET_KEYS_PREVIOUS`` only open, verify and match what was made with them, so
that the master secret can change without losing a sealed value or signing anyone out
(the procedure is in ``docs/operations.md``).

- **Key ids are derived**, never chosen: the first four bytes of HKDF(secret,
  ``sesame/key-id``), eight hex digits. An operator cannot mistype one, two secrets get
  the same id only by accident (2^-32 per pair, refused at start), and the id says
  nothing about the secret.
- **Each purpose has its own key per secret** (HKDF with info ``sesame/<purpose>``, as
  before the ring existed, so everything made before still opens).
- **Sealed values carry their key id**: ``SK1`` + the id's four bytes + the AES-GCM nonce
  and ciphertext. A value without the prefix was sealed before key ids existed; it is
  tried with every key in the ring, the current one first (AES-GCM authenticates, so a
  wrong key fails and never yields garbage). A legacy value whose random nonce happened to
  begin with the prefix and a known id fails that key's tag and is then read as legacy.
- **Tokens carry their key id** in the JWT ``kid`` header; see ``sesame.auth.tokens``.
- **Keyed digests carry no id** (they are looked up or compared as they are).
  ``digests`` gives the digest under every key in the ring, so a lookup matches values
  made under an older secret: a short-lived one-time code is simply checked against
  each, and a PIN's duplicate check compares with each while ``sesame secrets rotate``
  recomputes stored PIN digests from the sealed code under the current secret. A digest
  of an input the server cannot recover (it stores only the digest) can never be
  recomputed: it must stay matchable until it expires, which is why a previous secret is
  dropped only after the longest such lifetime (one-time codes: minutes).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from sesame.kit.security import derive_key, equal, keyed_digest, seal, unseal

SEALED_PREFIX = b"SK1"
KEY_ID_BYTES = 4
_HEADER = len(SEALED_PREFIX) + KEY_ID_BYTES


def key_id_of(secret: str) -> str:
    """The id a secret's values and tokens are tagged with."""
    return derive_key(secret, "key-id", KEY_ID_BYTES).hex()


class UnknownKey(ValueError):
    """A sealed value or token names a key id that is not in the ring."""


@dataclass(frozen=True)
class PurposeKey:
    key_id: str
    key: bytes


class PurposeKeys:
    """One purpose's key under each secret of the ring; the first is the current one."""

    def __init__(self, keys: Sequence[PurposeKey]) -> None:
        self.keys = tuple(keys)
        self.current = self.keys[0]
        self._by_id = {k.key_id: k for k in self.keys}

    def find(self, key_id: str) -> PurposeKey | None:
        return self._by_id.get(key_id)

    # -- sealing ------------------------------------------------------------------------------

    def seal(self, plaintext: bytes, associated: bytes = b"") -> bytes:
        tag = SEALED_PREFIX + bytes.fromhex(self.current.key_id)
        return tag + seal(self.current.key, plaintext, associated)

    def unseal(self, sealed: bytes, associated: bytes = b"") -> bytes:
        """Open a value sealed under any secret of the ring, tagged or not.

        Raises ``InvalidTag`` when no key opens it, ``UnknownKey`` when it names a key id
        the ring no longer holds and no legacy reading opens it either."""
        return self._open(sealed, associated)[1]

    def opener(self, sealed: bytes, associated: bytes = b"") -> PurposeKey:
        """The key that opens the value (raises as ``unseal`` does)."""
        return self._open(sealed, associated)[0]

    def _open(self, sealed: bytes, associated: bytes) -> tuple[PurposeKey, bytes]:
        sealed = bytes(sealed)
        tagged = self._tagged_key(sealed)
        if tagged is not None:
            with suppress(InvalidTag):
                return tagged, unseal(tagged.key, sealed[_HEADER:], associated)
        for candidate in self.keys:
            with suppress(InvalidTag):
                return candidate, unseal(candidate.key, sealed, associated)
        if sealed.startswith(SEALED_PREFIX) and tagged is None:
            raise UnknownKey(f"sealed under key {sealed[3:_HEADER].hex()}, not in the ring")
        raise InvalidTag

    def is_current(self, sealed: bytes) -> bool:
        """True when the value is tagged with the current key (nothing to re-seal)."""
        return bytes(sealed[:_HEADER]) == SEALED_PREFIX + bytes.fromhex(self.current.key_id)

    def reseal(self, sealed: bytes, associated: bytes = b"") -> bytes | None:
        """The value sealed under the current key; None when it already is."""
        if self.is_current(sealed):
            return None
        return self.seal(self.unseal(sealed, associated), associated)

    def _tagged_key(self, sealed: bytes) -> PurposeKey | None:
        if len(sealed) <= _HEADER or not sealed.startswith(SEALED_PREFIX):
            return None
        return self.find(sealed[len(SEALED_PREFIX) : _HEADER].hex())

    # -- keyed digests ------------------------------------------------------------------------

    def digest(self, *parts: str) -> str:
        """The digest to store: under the current key."""
        return keyed_digest(self.current.key, *parts)

    def digests(self, *parts: str) -> tuple[str, ...]:
        """The digest under every key of the ring, current first: what a lookup matches."""
        return tuple(keyed_digest(k.key, *parts) for k in self.keys)

    def matches(self, stored: str, *parts: str) -> bool:
        """Constant-time: does ``stored`` digest ``parts`` under some key of the ring?"""
        found = False
        for candidate in self.digests(*parts):
            found |= equal(candidate, stored)
        return found


class KeyRing:
    """The current secret and the previous ones, by key id."""

    def __init__(self, current: str, previous: Sequence[str] = ()) -> None:
        self.secrets = (current, *[p for p in previous if p != current])
        self.key_ids = tuple(key_id_of(s) for s in self.secrets)
        if len(set(self.key_ids)) != len(self.key_ids):
            raise ValueError("two secrets in the key ring have the same key id; replace one")
        self.current_id = self.key_ids[0]

    @functools.cache  # noqa: B019 - a ring lives as long as its process
    def purpose(self, purpose: str) -> PurposeKeys:
        return PurposeKeys(
            [
                PurposeKey(key_id, derive_key(secret, purpose))
                for key_id, secret in zip(self.key_ids, self.secrets, strict=True)
            ]
        )

    def derive(self, key_id: str, purpose: str) -> bytes:
        """The purpose's key under the secret with this id."""
        return derive_key(self.secrets[self.key_ids.index(key_id)], purpose)
