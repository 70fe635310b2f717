"""Declarative base shared by every table.

Names of constraints follow one convention so that migrations are stable across
PostgreSQL and SQLite. Relationships default to ``lazy="raise"``: async code must say
what it loads, never trip over an implicit lazy load.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar
from uuid import UUID

from sqlalchemy import JSON, Date, MetaData, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sesame.kit.db import UTCDateTime
from sesame.kit.ids import new_id

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        date: Date(),
        UUID: Uuid(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


class IdMixin:
    id: Mapped[UUID] = mapped_column(primary_key=True, default=new_id, sort_order=-10)


def utcnow() -> datetime:
    return datetime.now(UTC)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
