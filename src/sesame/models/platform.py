"""Tables for the whole platform: idempotency records, rate-limit counters and the
platform's own sealed keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sesame.models.base import Base, IdMixin


class IdempotencyRecord(IdMixin, Base):
    """The stored answer to a POST, replayed for the same key and body.

    ``body`` is sealed (AES-GCM under a key derived from the server secret): some answers
    carry secrets shown once, such as a new API key.
    """

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("scope", "key"), Index(None, "expires_at"))

    scope: Mapped[str] = mapped_column(String(80))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    headers: Mapped[dict[str, Any]]
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class RateLimitCounter(Base):
    """Fixed-window counters shared by every process through the database."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[int] = mapped_column(primary_key=True)
    count: Mapped[int]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class PlatformKey(Base):
    """A key of the platform's own that must outlive a change of master secret (the VAPID
    key push subscriptions are bound to): generated or derived once, stored sealed, and
    re-sealed by ``sesame secrets rotate``."""

    __tablename__ = "platform_keys"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
