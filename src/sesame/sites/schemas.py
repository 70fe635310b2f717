from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import Field

from sesame.api.crud import InputModel, ListQuery, OutputModel
from sesame.kit.types import Name, ShortName, TimeZoneName
from sesame.models import EntranceKind, HouseholdRole, SiteKind

FLOOR_DESCRIPTION = "Negative for basements (B1 = -1)."


class SiteCreate(InputModel):
    partner_id: UUID | None = Field(None, description="Required for platform staff only.")
    name: Name
    kind: SiteKind = SiteKind.APARTMENT_COMPLEX
    address: str | None = Field(None, max_length=500)
    time_zone: TimeZoneName | None = Field(
        None, description="IANA name; the installation default (Asia/Seoul) when omitted."
    )


class SiteUpdate(InputModel):
    name: Name | None = None
    kind: SiteKind | None = None
    address: str | None = Field(None, max_length=500)
    time_zone: TimeZoneName | None = None
    sharing_roles: list[HouseholdRole] | None = Field(
        None, description="Household roles whose members may share their key."
    )
    max_shared_keys_per_unit: int | None = Field(None, ge=0, le=50)


class SiteRead(OutputModel):
    id: UUID
    partner_id: UUID
    name: str
    kind: SiteKind
    address: str | None
    time_zone: str
    sharing_roles: list[str]
    max_shared_keys_per_unit: int
    created_at: datetime
    updated_at: datetime


class SiteQuery(ListQuery):
    partner_id: UUID | None = None
    kind: SiteKind | None = None
    q: str | None = Field(None, max_length=100, description="Part of the name.")


class BuildingCreate(InputModel):
    site_id: UUID
    name: ShortName = Field(description="For example '101동'.")
    floor_count: int | None = Field(None, ge=1, le=300)


class BuildingUpdate(InputModel):
    name: ShortName | None = None
    floor_count: int | None = Field(None, ge=1, le=300)


class BuildingRead(OutputModel):
    id: UUID
    partner_id: UUID
    site_id: UUID
    name: str
    floor_count: int | None
    created_at: datetime
    updated_at: datetime


class BuildingQuery(ListQuery):
    site_id: UUID | None = None


class UnitCreate(InputModel):
    building_id: UUID
    name: ShortName = Field(description="For example '1001호'.")
    floor: int = Field(ge=-20, le=300, description=FLOOR_DESCRIPTION)


class UnitUpdate(InputModel):
    name: ShortName | None = None
    floor: int | None = Field(None, ge=-20, le=300, description=FLOOR_DESCRIPTION)


class UnitRead(OutputModel):
    id: UUID
    partner_id: UUID
    site_id: UUID
    building_id: UUID
    name: str
    floor: int
    created_at: datetime
    updated_at: datetime


class UnitQuery(ListQuery):
    site_id: UUID | None = None
    building_id: UUID | None = None
    floor: int | None = Field(None, ge=-20, le=300)


class EntranceCreate(InputModel):
    site_id: UUID
    name: Name
    kind: EntranceKind = EntranceKind.COMMON_ENTRANCE
    building_id: UUID | None = Field(None, description="Required for a building door.")
    unit_id: UUID | None = Field(None, description="Required for a unit door.")


class EntranceUpdate(InputModel):
    name: Name | None = None
    kind: EntranceKind | None = None
    building_id: UUID | None = None
    unit_id: UUID | None = None


class EntranceRead(OutputModel):
    id: UUID
    partner_id: UUID
    site_id: UUID
    building_id: UUID | None
    unit_id: UUID | None
    name: str
    kind: EntranceKind
    created_at: datetime
    updated_at: datetime


class EntranceQuery(ListQuery):
    site_id: UUID | None = None
    building_id: UUID | None = None
    unit_id: UUID | None = None
    kind: EntranceKind | None = None
