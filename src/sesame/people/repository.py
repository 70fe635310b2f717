"""SQL for people and households."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, and_, or_, select

from sesame.kit.repository import CrudRepository
from sesame.models import Household, Person


class PersonRepository(CrudRepository[Person]):
    model = Person

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        for name in ("site_id", "phone", "kind"):
            value = getattr(query, name)
            if value is not None:
                clauses.append(getattr(Person, name) == value)
        if query.q:
            clauses.append(Person.name.icontains(query.q, autoescape=True))
        return clauses

    async def by_ids(self, person_ids: Sequence[UUID]) -> Sequence[Person]:
        if not person_ids:
            return []
        result = await self.session.execute(
            select(Person).where(Person.id.in_(person_ids)).order_by(Person.id)
        )
        return result.scalars().all()


def active_on(day: date) -> ColumnElement[bool]:
    return and_(
        or_(Household.move_in_on.is_(None), Household.move_in_on <= day),
        or_(Household.move_out_on.is_(None), Household.move_out_on > day),
    )


class HouseholdRepository(CrudRepository[Household]):
    model = Household

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        for name in ("site_id", "unit_id", "person_id", "role"):
            value = getattr(query, name)
            if value is not None:
                clauses.append(getattr(Household, name) == value)
        if query.active_on is not None:
            clauses.append(active_on(query.active_on))
        return clauses

    async def for_people(self, person_ids: Sequence[UUID]) -> Sequence[Household]:
        if not person_ids:
            return []
        result = await self.session.execute(
            select(Household).where(Household.person_id.in_(person_ids)).order_by(Household.id)
        )
        return result.scalars().all()
