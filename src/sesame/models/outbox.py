"""The transactional outbox: domain events written in the same transaction as the change.

Consumers (ledger, notifications, statistics) read it in ``id`` order and remember how
far they got; a row exists if and only if its transaction committed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from sesame.models.base import Base, utcnow


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index(None, "topic", "id"),)

    # BIGINT on PostgreSQL; INTEGER (the rowid) on SQLite, where only it autoincrements.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )
    topic: Mapped[str] = mapped_column(String(64))
    partner_id: Mapped[UUID | None]
    aggregate_id: Mapped[UUID | None]
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # For ledger events: the log's Ed25519 signature ‖ the canonical entry it signs, made
    # by the committing process (see sesame.ledger.service); null for other events.
    seal: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
