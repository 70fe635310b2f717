"""Staff accounts and the sites a site-scoped role may act on."""

from __future__ import annotations

import enum
from datetime import datetime
from uuid import UUID

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from sesame.models.base import Base, IdMixin, TimestampMixin
from sesame.models.tenancy import str_enum


class StaffRole(enum.StrEnum):
    PLATFORM_ADMIN = "platform_admin"
    PARTNER_ADMIN = "partner_admin"
    SITE_MANAGER = "site_manager"
    INSTALLER = "installer"

    @property
    def site_scoped(self) -> bool:
        return self in (StaffRole.SITE_MANAGER, StaffRole.INSTALLER)


class StaffAccount(IdMixin, TimestampMixin, Base):
    __tablename__ = "staff_accounts"
    __tenant_columns__ = ("partner_id", None)
    __table_args__ = (Index(None, "partner_id"),)

    partner_id: Mapped[UUID | None] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[StaffRole] = mapped_column(str_enum(StaffRole, "staff_role"))
    password_hash: Mapped[str] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(default=True)
    last_login_at: Mapped[datetime | None]

    site_scopes: Mapped[list[StaffSiteScope]] = relationship(
        lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def site_ids(self) -> list[UUID]:
        return [scope.site_id for scope in self.site_scopes]


class StaffSiteScope(Base):
    __tablename__ = "staff_site_scopes"

    staff_id: Mapped[UUID] = mapped_column(
        ForeignKey("staff_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    site_id: Mapped[UUID] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True, index=True
    )
