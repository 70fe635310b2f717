"""Partners are the tenants: property managers and hospitality operators.

Every tenant-owned row carries ``partner_id`` (and ``site_id`` where it lives under a
site), copied from its parent when it is created. Scoping a query is then one indexed
comparison, never a chain of joins; ``__tenant_columns__`` tells the shared repository
which columns those are (see ``sesame.kit.repository``).
"""

from __future__ import annotations

import enum

from sqlalchemy import Enum, String
from sqlalchemy.orm import Mapped, mapped_column

from sesame.kit.repository import PARTNER_WIDE
from sesame.models.base import Base, IdMixin, TimestampMixin


def str_enum(enum_type: type[enum.Enum], name: str) -> Enum:
    """Enums stored as their value in a plain string column (no native types to migrate)."""
    return Enum(
        enum_type,
        name=name,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda members: [m.value for m in members],
    )


class PartnerKind(enum.StrEnum):
    PROPERTY_MANAGER = "property_manager"
    HOSPITALITY = "hospitality"


class Partner(IdMixin, TimestampMixin, Base):
    __tablename__ = "partners"
    __tenant_columns__ = ("id", PARTNER_WIDE)

    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[PartnerKind] = mapped_column(str_enum(PartnerKind, "partner_kind"))
