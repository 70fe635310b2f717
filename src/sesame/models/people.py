"""People (residents and guests) and households, the link between a person and a unit."""

from __future__ import annotations

import enum
from datetime import date
from uuid import UUID

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sesame.models.base import Base, IdMixin, TimestampMixin
from sesame.models.tenancy import str_enum


class PersonKind(enum.StrEnum):
    RESIDENT = "resident"
    GUEST = "guest"
    COURIER = "courier"
    STAFF = "staff"


class HouseholdRole(enum.StrEnum):
    OWNER = "owner"
    MEMBER = "member"
    TENANT = "tenant"


class Person(IdMixin, TimestampMixin, Base):
    """A person known to one partner; ``site_id`` is the site that manages them, if any."""

    __tablename__ = "people"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (
        UniqueConstraint("partner_id", "phone"),
        Index(None, "phone"),
        Index(None, "site_id"),
    )

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    site_id: Mapped[UUID | None] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    phone: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    locale: Mapped[str] = mapped_column(String(35))
    kind: Mapped[PersonKind] = mapped_column(str_enum(PersonKind, "person_kind"))


class Household(IdMixin, TimestampMixin, Base):
    __tablename__ = "households"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (
        CheckConstraint(
            "move_out_on IS NULL OR move_in_on IS NULL OR move_out_on >= move_in_on",
            name="move_out_after_move_in",
        ),
        Index(None, "unit_id"),
        Index(None, "person_id"),
        Index(None, "site_id", "person_id"),  # a campaign's residents, a page at a time
        Index(None, "partner_id"),
    )

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    site_id: Mapped[UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    unit_id: Mapped[UUID] = mapped_column(ForeignKey("units.id", ondelete="RESTRICT"))
    person_id: Mapped[UUID] = mapped_column(ForeignKey("people.id", ondelete="RESTRICT"))
    role: Mapped[HouseholdRole] = mapped_column(str_enum(HouseholdRole, "household_role"))
    move_in_on: Mapped[date | None]
    move_out_on: Mapped[date | None]
