"""A repository base that cannot forget the tenant.

Every read goes through ``scoped()``, which adds the tenant filter derived from a
``TenantScope``: the caller's partner (or none, for the platform) and, for site-scoped
staff, their sites. A row outside the scope is simply not found, so another tenant's
object answers 404, the same as one that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast
from uuid import UUID

from sqlalchemy import ColumnElement, Select, bindparam, false, insert, select
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


S = TypeVar("S")
_PREPARED: dict[Hashable, Any] = {}


def prepared(key: Hashable, build: Callable[[], S]) -> S:
    """The statement ``build`` makes, built once per ``key``, its values as bound parameters.

    Building a statement and computing its cache key cost more than running it: on the
    hot paths (an open, a device's result, a GET by id) a statement built per call took
    three times the time of the same one built once. ``key`` names the statement and
    every choice ``build`` makes (which clauses, which columns)."""
    statement = _PREPARED.get(key)
    if statement is None:
        statement = _PREPARED[key] = build()
    return cast(S, statement)


def scope_shape(scope: TenantScope) -> tuple[bool, bool]:
    """Which tenant clauses ``scope`` needs: what a prepared statement's key must name."""
    return (scope.partner_id is not None, scope.site_ids is not None)


def scope_clauses(model: Any, scope: TenantScope) -> list[ColumnElement[bool]]:
    """``tenant_clauses`` with bound parameters (filled by ``scope_parameters``) instead of
    values, for a prepared statement."""
    return _confine(
        model,
        bindparam("tenant_partner_id") if scope.partner_id is not None else None,
        bindparam("tenant_site_ids", expanding=True) if scope.site_ids is not None else None,
    )


def scope_parameters(scope: TenantScope, **values: Any) -> dict[str, Any]:
    """The bound parameters of ``scope_clauses``, with ``values``."""
    if scope.partner_id is not None:
        values["tenant_partner_id"] = scope.partner_id
    if scope.site_ids is not None:
        values["tenant_site_ids"] = list(scope.site_ids)
    return values


def new_rows(objects: Sequence[Any]) -> list[dict[str, Any]]:
    """New ORM objects of one model as rows for a Core ``INSERT`` (``insert_new``).

    A column the object leaves unset gets its Python-side default, on the object too,
    as the unit of work would give it at flush; one with neither value nor default is
    NULL, as the unit of work would write it. One with only a server-side default must
    be set: the row would not know its value."""
    rows = []
    for obj in objects:
        values = obj.__dict__
        row: dict[str, Any] = {}
        for column in obj.__table__.columns:
            key = column.key
            if key not in values:
                default = column.default
                if default is None or not (default.is_scalar or default.is_callable):
                    if column.server_default is not None:
                        raise ValueError(f"{column} has only a server default: set it")
                    value = None
                else:
                    value = default.arg(None) if default.is_callable else default.arg
                setattr(obj, key, value)
            row[key] = values[key]
        rows.append(row)
    return rows


async def insert_new(session: AsyncSession, objects: Sequence[Any]) -> None:
    """Insert new ORM objects of one model with one Core statement, now, outside the
    unit of work: on the hot paths (an open's attempt and access-log entry) a flush
    cost several times the insert. The objects stay out of the session: nothing in
    this transaction may change them afterwards and expect it written."""
    if not objects:
        return
    table = objects[0].__table__
    statement = prepared(("insert_new", table), lambda: insert(table))
    connection = await session.connection()
    await connection.execute(statement, new_rows(objects))


def _by_id_statement(repository: type[CrudRepository[Any]], scope: TenantScope) -> Select[Any]:
    """``scoped(scope).where(id == ...)``, prepared per repository and shape of scope."""

    def build() -> Select[Any]:
        model = repository.model
        statement = select(model).where(
            *scope_clauses(model, scope), model.id == bindparam("object_id")
        )
        return statement.options(*repository.load_options) if repository.load_options else statement

    return prepared(("by_id", repository, *scope_shape(scope)), build)


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
            result = await self.session.execute(
                _by_id_statement(type(self), scope), scope_parameters(scope, object_id=object_id)
            )
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
