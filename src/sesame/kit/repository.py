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

from sqlalchemy import ColumnElement, Select, bindparam, false, select
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
    return _confine(model, scope.partner_id, scope.site_ids)


def _confine(model: Any, partner: Any, site_ids: Any) -> list[ColumnElement[bool]]:
    """``tenant_clauses`` over values or over bound parameters that stand for them."""
    partner_column, site_column = model.__tenant_columns__
    clauses: list[ColumnElement[bool]] = []
    if partner is not None:
        clauses.append(getattr(model, partner_column) == partner)
    if site_ids is not None and site_column != PARTNER_WIDE:
        if site_column is None:
            # A site-scoped caller sees no partner-wide rows of this kind.
            clauses.append(false())
        else:
            clauses.append(getattr(model, site_column).in_(site_ids))
    return clauses


_BY_ID: dict[tuple[type[Any], bool, bool], Select[Any]] = {}


def _by_id_statement(repository: type[CrudRepository[Any]], scope: TenantScope) -> Select[Any]:
    """``scoped(scope).where(id == ...)`` with the values as bound parameters, built once
    per repository and shape of scope: a GET by id then neither builds the statement nor
    computes its cache key again (both cost more than the query on the wire)."""
    shape = (repository, scope.partner_id is not None, scope.site_ids is not None)
    statement = _BY_ID.get(shape)
    if statement is None:
        model = repository.model
        clauses = _confine(
            model,
            bindparam("tenant_partner_id") if scope.partner_id is not None else None,
            bindparam("tenant_site_ids", expanding=True) if scope.site_ids is not None else None,
        )
        statement = select(model).where(*clauses, model.id == bindparam("object_id"))
        if repository.load_options:
            statement = statement.options(*repository.load_options)
        _BY_ID[shape] = statement
    return statement


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
    # Loader options every read of the resource needs (eager loads of its collections).
    load_options: ClassVar[tuple[Any, ...]] = ()

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        """WHERE clauses for a list endpoint's filters; resources override it."""
        return []

    def scoped(self, scope: TenantScope) -> Select[Any]:
        statement = select(self.model).where(*tenant_clauses(self.model, scope))
        return statement.options(*self.load_options) if self.load_options else statement

    async def get(self, scope: TenantScope, object_id: UUID) -> M | None:
        if type(self).scoped is not CrudRepository.scoped:  # a scope of its own: honour it
            result = await self.session.execute(
                self.scoped(scope).where(self.model.id == object_id)
            )
        else:
            parameters: dict[str, Any] = {"object_id": object_id}
            if scope.partner_id is not None:
                parameters["tenant_partner_id"] = scope.partner_id
            if scope.site_ids is not None:
                parameters["tenant_site_ids"] = list(scope.site_ids)
            result = await self.session.execute(_by_id_statement(type(self), scope), parameters)
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
