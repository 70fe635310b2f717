"""A repository base that cannot forget the tenant.

Every read goes through ``scoped()``, which adds the tenant filter derived from a
``TenantScope``: the caller's partner (or none, for the platform) and, for site-scoped
staff, their sites. A row outside the scope is simply not found, so another tenant's
object answers 404, the same as one that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

from sqlalchemy import ColumnElement, Select, false, select
from sqlalchemy.ext.asyncio import AsyncSession

from sesame.kit.db import try_advisory_xact_lock

M = TypeVar("M")


@dataclass(frozen=True)
class TenantScope:
    """What a caller may see: ``partner_id`` None means every partner (platform staff);
    ``site_ids`` None means every site of the partner."""

    partner_id: UUID | None
    site_ids: frozenset[UUID] | None = None

    @classmethod
    def platform(cls) -> TenantScope:
        return cls(partner_id=None, site_ids=None)

    def allows(self, partner_id: UUID | None, site_id: UUID | None) -> bool:
        if self.partner_id is not None and partner_id != self.partner_id:
            return False
        return not (self.site_ids is not None and (site_id is None or site_id not in self.site_ids))


# ``__tenant_columns__ = (partner_column, site_column)`` on each tenant-owned model.
# ``site_column`` may also be ``None``: partner-wide rows that site-scoped callers do not
# see (staff accounts, API keys); or ``PARTNER_WIDE``: rows every caller of the partner
# sees (the partner itself).
PARTNER_WIDE = "*"


def tenant_clauses(model: Any, scope: TenantScope) -> list[ColumnElement[bool]]:
    """The WHERE clauses that confine ``model`` to ``scope``."""
    partner_column, site_column = model.__tenant_columns__
    clauses: list[ColumnElement[bool]] = []
    if scope.partner_id is not None:
        clauses.append(getattr(model, partner_column) == scope.partner_id)
    if scope.site_ids is not None and site_column != PARTNER_WIDE:
        if site_column is None:
            # A site-scoped caller sees no partner-wide rows of this kind.
            clauses.append(false())
        else:
            clauses.append(getattr(model, site_column).in_(scope.site_ids))
    return clauses


class SessionRepository:
    """SQL over one session, for repositories that are not one table's CRUD: knows its
    backend and takes the advisory lock of work one process at a time does."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    async def try_lock(self, key: int) -> bool:
        return await try_advisory_xact_lock(self.session, key)


class CrudRepository(Generic[M]):
    model: ClassVar[type[Any]]

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        """WHERE clauses for a list endpoint's filters; resources override it."""
        return []

    def scoped(self, scope: TenantScope) -> Select[Any]:
        return select(self.model).where(*tenant_clauses(self.model, scope))

    async def get(self, scope: TenantScope, object_id: UUID) -> M | None:
        statement = self.scoped(scope).where(self.model.id == object_id)
        result = await self.session.execute(statement)
        found: M | None = result.scalar_one_or_none()
        return found

    async def find_by(self, scope: TenantScope, **equals: Any) -> M | None:
        """The first row in scope whose columns equal the given values."""
        statement = self.scoped(scope).where(
            *(getattr(self.model, name) == value for name, value in equals.items())
        )
        result = await self.session.execute(statement.order_by(self.model.id).limit(1))
        found: M | None = result.scalars().first()
        return found

    async def list(
        self,
        scope: TenantScope,
        *,
        clauses: Sequence[ColumnElement[bool]] = (),
        limit: int,
        after: UUID | None = None,
    ) -> Sequence[M]:
        """Up to ``limit + 1`` rows in id order, so the caller knows whether more follow."""
        statement = self.scoped(scope).where(*clauses)
        if after is not None:
            statement = statement.where(self.model.id > after)
        statement = statement.order_by(self.model.id).limit(limit + 1)
        result = await self.session.execute(statement)
        rows: Sequence[M] = result.scalars().all()
        return rows

    async def add(self, obj: M) -> M:
        self.session.add(obj)
        await self.session.flush()
        return obj

    async def flush(self) -> None:
        await self.session.flush()

    async def delete(self, obj: M) -> None:
        await self.session.delete(obj)
        await self.session.flush()
