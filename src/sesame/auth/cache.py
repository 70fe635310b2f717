"""A short-lived, per-process memory of resolved credentials.

Resolving a credential costs a database round trip or two on every request. This cache
keeps the answer for ``SESAME_AUTH_CACHE_SECONDS`` (default 5 s; 0 turns it off), never
past the credential's own expiry. A revocation clears it at once in the process that
performs it; other processes notice within that many seconds. Keys are digests, so the
cache holds no bearer secrets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cachetools import TTLCache

from sesame.kit.security import digest


class CredentialCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._entries: TTLCache[str, tuple[Any, datetime | None]] | None = (
            TTLCache(maxsize=max_entries, ttl=ttl_seconds) if ttl_seconds > 0 else None
        )

    def get(self, credential: str, now: datetime) -> Any | None:
        if self._entries is None:
            return None
        entry = self._entries.get(digest(credential))
        if entry is None:
            return None
        value, not_after = entry
        if not_after is not None and not_after <= now:
            return None
        return value

    def put(self, credential: str, value: Any, not_after: datetime | None) -> None:
        if self._entries is not None:
            self._entries[digest(credential)] = (value, not_after)

    def clear(self) -> None:
        if self._entries is not None:
            self._entries.clear()
