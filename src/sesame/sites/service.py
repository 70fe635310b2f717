"""Rules for places: children inherit their parent's partner and site, and must match them.

A building belongs to a site, a unit to a building (and so to its site), an entrance to a
site and optionally to one of its buildings or units. Parents are looked up in the
caller's scope, so naming another tenant's site is the same 404 as naming none.
"""

from __future__ import annotations

from typing import Any

from sesame.api.crud import CrudService
from sesame.auth.principal import Group
from sesame.kit.errors import FieldError, ValidationFailed
from sesame.models import Building, Entrance, EntranceKind, Site, Unit
from sesame.sites.repository import (
    BuildingRepository,
    EntranceRepository,
    SiteRepository,
    UnitRepository,
)
from sesame.sites.schemas import BuildingCreate, EntranceCreate, SiteCreate, UnitCreate


class SiteService(CrudService[Site]):
    group = Group.SITES
    noun = "site"
    repository_class = SiteRepository

    async def build(self, data: SiteCreate) -> Site:
        self.principal.require_partner_level("creating a site")
        return Site(
            partner_id=await self.owning_partner(data.partner_id),
            name=data.name,
            kind=data.kind,
            address=data.address,
            time_zone=data.time_zone or self.runtime.settings.default_time_zone,
            sharing_roles=["owner", "tenant"],
            max_shared_keys_per_unit=4,
        )

    async def apply(self, obj: Site, changes: dict[str, Any]) -> None:
        if changes.get("sharing_roles") is not None:
            changes["sharing_roles"] = [str(role) for role in changes["sharing_roles"]]
        await super().apply(obj, changes)

    async def before_delete(self, obj: Site) -> None:
        self.principal.require_partner_level("deleting a site")


class BuildingService(CrudService[Building]):
    group = Group.SITES
    noun = "building"
    repository_class = BuildingRepository

    async def build(self, data: BuildingCreate) -> Building:
        site = await self.visible(SiteRepository(self.session), data.site_id, "site")
        return Building(
            partner_id=site.partner_id,
            site_id=site.id,
            name=data.name,
            floor_count=data.floor_count,
        )


class UnitService(CrudService[Unit]):
    group = Group.SITES
    noun = "unit"
    repository_class = UnitRepository

    async def build(self, data: UnitCreate) -> Unit:
        building = await self.visible(
            BuildingRepository(self.session), data.building_id, "building"
        )
        _check_floor(building, data.floor)
        return Unit(
            partner_id=building.partner_id,
            site_id=building.site_id,
            building_id=building.id,
            name=data.name,
            floor=data.floor,
        )

    async def apply(self, obj: Unit, changes: dict[str, Any]) -> None:
        if changes.get("floor") is not None:
            building = await self.visible(
                BuildingRepository(self.session), obj.building_id, "building"
            )
            _check_floor(building, changes["floor"])
        await super().apply(obj, changes)


def _check_floor(building: Building, floor: int) -> None:
    if building.floor_count is not None and floor > building.floor_count:
        raise ValidationFailed(
            f"floor {floor} is above the building's {building.floor_count} floors",
            errors=[FieldError(("body", "floor"), "above the top floor", "floor_out_of_range")],
        )


class EntranceService(CrudService[Entrance]):
    group = Group.SITES
    noun = "entrance"
    repository_class = EntranceRepository

    async def build(self, data: EntranceCreate) -> Entrance:
        site = await self.visible(SiteRepository(self.session), data.site_id, "site")
        entrance = Entrance(
            partner_id=site.partner_id,
            site_id=site.id,
            name=data.name,
            kind=data.kind,
            building_id=data.building_id,
            unit_id=data.unit_id,
        )
        await self._check_placement(entrance)
        return entrance

    async def apply(self, obj: Entrance, changes: dict[str, Any]) -> None:
        await super().apply(obj, changes)
        await self._check_placement(obj)

    async def _check_placement(self, entrance: Entrance) -> None:
        """The building and unit, when given, are in the entrance's site and agree."""
        errors: list[FieldError] = []
        if entrance.unit_id is not None:
            unit = await self.visible(UnitRepository(self.session), entrance.unit_id, "unit")
            if unit.site_id != entrance.site_id:
                errors.append(
                    FieldError(("body", "unit_id"), "unit is in another site", "wrong_site")
                )
            elif entrance.building_id is None:
                entrance.building_id = unit.building_id
            elif entrance.building_id != unit.building_id:
                errors.append(
                    FieldError(("body", "unit_id"), "unit is in another building", "wrong_building")
                )
        if entrance.building_id is not None:
            building = await self.visible(
                BuildingRepository(self.session), entrance.building_id, "building"
            )
            if building.site_id != entrance.site_id:
                errors.append(
                    FieldError(("body", "building_id"), "building is in another site", "wrong_site")
                )
        if entrance.kind is EntranceKind.UNIT_DOOR and entrance.unit_id is None:
            errors.append(FieldError(("body", "unit_id"), "a unit door needs a unit", "missing"))
        if entrance.kind is EntranceKind.BUILDING_DOOR and entrance.building_id is None:
            errors.append(
                FieldError(("body", "building_id"), "a building door needs a building", "missing")
            )
        if errors:
            raise ValidationFailed("the entrance's placement is inconsistent", errors=errors)
