"""Secrets: password hashing, opaque tokens, keyed digests and sealed blobs.

- Passwords are hashed with argon2id at the installation's cost
  (``SESAME_PASSWORD_TIME_COST``, ``SESAME_PASSWORD_MEMORY_KIB``); hashing runs in a
  worker thread so that a login never stalls the event loop for the other requests. A
  hash records its own parameters, so hashes made at another cost still verify.
- Opaque high-entropy tokens (refresh tokens, API key secrets) are stored as SHA-256
  digests: they are random, so a slow hash adds nothing but latency.
- Low-entropy secrets (six-digit codes) are stored as HMAC digests under a server key,
  so a stolen table cannot be brute-forced offline.
- Every comparison of secrets is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class PasswordHashing:
    """argon2id at one cost: ``time_cost`` passes over ``memory_kib`` KiB."""

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65536) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        # A hash of a random password at the same cost, verified when the account does not
        # exist, so that "no such account" and "wrong password" take the same time.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Check a password against its hash; with no hash, spend the same time and fail."""

        def check() -> bool:
            try:
                return self._hasher.verify(password_hash or self._dummy, password) and bool(
                    password_hash
                )
            except (VerificationError, InvalidHashError):
                return False

        return await anyio.to_thread.run_sync(check)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made at another cost than this one."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def digest(token: str) -> str:
    """SHA-256 hex digest of a high-entropy token, for storage and lookup."""
    return hashlib.sha256(token.encode()).hexdigest()


def keyed_digest(key: bytes, *parts: str) -> str:
    message = "\x1f".join(parts).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def equal(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode(), right.encode())


def derive_key(master: str, purpose: str, length: int = 32) -> bytes:
    """A key for one purpose, derived from the master secret (HKDF-SHA256)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=None, info=f"sesame/{purpose}".encode()
    ).derive(master.encode())


def seal(key: bytes, plaintext: bytes, associated: bytes = b"") -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def unseal(key: bytes, sealed: bytes, associated: bytes = b"") -> bytes:
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], associated)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
