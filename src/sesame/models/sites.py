"""Where doors are: sites (a complex or a stay), buildings (동), units (호) and entrances."""

from __future__ import annotations

import enum
from uuid import UUID

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sesame.models.base import Base, IdMixin, TimestampMixin
from sesame.models.tenancy import str_enum


class SiteKind(enum.StrEnum):
    APARTMENT_COMPLEX = "apartment_complex"
    STAY = "stay"


class EntranceKind(enum.StrEnum):
    COMMON_ENTRANCE = "common_entrance"
    BUILDING_DOOR = "building_door"
    UNIT_DOOR = "unit_door"
    PARKING_GATE = "parking_gate"


class Site(IdMixin, TimestampMixin, Base):
    __tablename__ = "sites"
    __tenant_columns__ = ("partner_id", "id")
    __table_args__ = (UniqueConstraint("partner_id", "name"),)

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[SiteKind] = mapped_column(str_enum(SiteKind, "site_kind"))
    address: Mapped[str | None] = mapped_column(String(500))
    time_zone: Mapped[str] = mapped_column(String(64))
    # Key sharing policy: which household roles may share their key, and how many shared
    # (household) keys a unit may have at once.
    sharing_roles: Mapped[list[str]] = mapped_column(default=lambda: ["owner", "tenant"])
    max_shared_keys_per_unit: Mapped[int] = mapped_column(default=4)
    # The last trust document's ``version``: each next one is the wall clock in Unix
    # milliseconds or this plus one, whichever is larger, so versions only ever grow,
    # whatever a server's clock does.
    trust_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Building(IdMixin, TimestampMixin, Base):
    __tablename__ = "buildings"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (UniqueConstraint("site_id", "name"), Index(None, "partner_id"))

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    site_id: Mapped[UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(100))
    floor_count: Mapped[int | None]


class Unit(IdMixin, TimestampMixin, Base):
    __tablename__ = "units"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (
        UniqueConstraint("building_id", "name"),
        Index(None, "site_id"),
        Index(None, "partner_id"),
    )

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    site_id: Mapped[UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    building_id: Mapped[UUID] = mapped_column(ForeignKey("buildings.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(100))
    floor: Mapped[int]


class Entrance(IdMixin, TimestampMixin, Base):
    __tablename__ = "entrances"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (
        Index(None, "site_id"),
        Index(None, "partner_id"),
        Index(None, "building_id"),
        Index(None, "unit_id"),
    )

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    site_id: Mapped[UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    building_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("buildings.id", ondelete="RESTRICT")
    )
    unit_id: Mapped[UUID | None] = mapped_column(ForeignKey("units.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[EntranceKind] = mapped_column(str_enum(EntranceKind, "entrance_kind"))
