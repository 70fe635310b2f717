"""SQL for sites, buildings, units and entrances."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, case, update

from sesame.kit.repository import CrudRepository
from sesame.models import Building, Entrance, Site, Unit


def _equal_filters(model: Any, query: Any, names: tuple[str, ...]) -> list[ColumnElement[bool]]:
    return [
        getattr(model, name) == getattr(query, name)
        for name in names
        if getattr(query, name, None) is not None
    ]


class SiteRepository(CrudRepository[Site]):
    model = Site

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        clauses = _equal_filters(Site, query, ("partner_id", "kind"))
        if query.q:
            clauses.append(Site.name.icontains(query.q, autoescape=True))
        return clauses

    async def next_trust_version(self, site_id: UUID, floor: int) -> int:
        """The site's next trust document version: ``floor`` (the wall clock) or one more
        than the last, whichever is larger; the row lock orders concurrent publishers."""
        following = Site.trust_version + 1
        result = await self.session.execute(
            update(Site)
            .where(Site.id == site_id)
            .values(
                trust_version=case((following > floor, following), else_=floor),
                updated_at=Site.updated_at,  # not a change of the site's own record
            )
            .returning(Site.trust_version)
        )
        return int(result.scalar_one())


class BuildingRepository(CrudRepository[Building]):
    model = Building

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        return _equal_filters(Building, query, ("site_id",))


class UnitRepository(CrudRepository[Unit]):
    model = Unit

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        return _equal_filters(Unit, query, ("site_id", "building_id", "floor"))


class EntranceRepository(CrudRepository[Entrance]):
    model = Entrance

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        return _equal_filters(Entrance, query, ("site_id", "building_id", "unit_id", "kind"))
