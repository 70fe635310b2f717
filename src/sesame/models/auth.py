"""Credentials: partner API keys, sign-in sessions, refresh tokens and one-time codes.

No secret is stored in the clear: API key secrets and refresh tokens as SHA-256 digests
(they are random), one-time codes as HMAC digests under a server key (they are short).
"""

from __future__ import annotations

import enum
from datetime import datetime
from uuid import UUID

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from sesame.models.base import Base, IdMixin, utcnow
from sesame.models.tenancy import str_enum


class ApiKey(IdMixin, Base):
    __tablename__ = "api_keys"
    __tenant_columns__ = ("partner_id", None)
    __table_args__ = (Index(None, "partner_id"),)

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_digest: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]]
    created_by_staff_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("staff_accounts.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class SubjectKind(enum.StrEnum):
    STAFF = "staff"
    RESIDENT = "resident"


class AuthSession(IdMixin, Base):
    """One sign-in; access tokens name it (``sid``) so that logout takes effect at once."""

    __tablename__ = "auth_sessions"
    __table_args__ = (Index(None, "staff_id"), Index(None, "phone"))

    subject_kind: Mapped[SubjectKind] = mapped_column(str_enum(SubjectKind, "subject_kind"))
    staff_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("staff_accounts.id", ondelete="CASCADE")
    )
    phone: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    client_address: Mapped[str | None] = mapped_column(String(64))


class RefreshToken(IdMixin, Base):
    """Refresh tokens rotate: each is good once; presenting a used one ends the session."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index(None, "session_id"),)

    session_id: Mapped[UUID] = mapped_column(ForeignKey("auth_sessions.id", ondelete="CASCADE"))
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class OtpChallenge(IdMixin, Base):
    __tablename__ = "otp_challenges"
    __table_args__ = (Index(None, "phone", "created_at"), Index(None, "expires_at"))

    phone: Mapped[str] = mapped_column(String(16))
    code_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0)
    consumed_at: Mapped[datetime | None]
