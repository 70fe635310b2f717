from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from pydantic import Field, model_validator

from sesame.api.crud import InputModel, ListQuery, OutputModel
from sesame.kit.types import Day, Locale, Name, Phone
from sesame.models import HouseholdRole, PersonKind


class PersonCreate(InputModel):
    partner_id: UUID | None = Field(None, description="Required for platform staff only.")
    site_id: UUID | None = Field(
        None, description="The site that manages this person; required for site staff."
    )
    phone: Phone = Field(description="E.164, e.g. +821012345678; Korean national numbers accepted.")
    name: Name
    locale: Locale = "ko-KR"
    kind: PersonKind = PersonKind.RESIDENT


class PersonUpdate(InputModel):
    site_id: UUID | None = None
    phone: Phone | None = None
    name: Name | None = None
    locale: Locale | None = None
    kind: PersonKind | None = None


class PersonRead(OutputModel):
    id: UUID
    partner_id: UUID
    site_id: UUID | None
    phone: str
    name: str
    locale: str
    kind: PersonKind
    created_at: datetime
    updated_at: datetime


class PersonQuery(ListQuery):
    site_id: UUID | None = None
    phone: Phone | None = None
    kind: PersonKind | None = None
    q: str | None = Field(None, max_length=100, description="Part of the name.")


def _dates_in_order(move_in_on: date | None, move_out_on: date | None) -> None:
    if move_in_on and move_out_on and move_out_on < move_in_on:
        raise ValueError("move_out_on is before move_in_on")


class HouseholdCreate(InputModel):
    person_id: UUID
    unit_id: UUID
    role: HouseholdRole = HouseholdRole.MEMBER
    move_in_on: Day | None = None
    move_out_on: Day | None = None

    @model_validator(mode="after")
    def _order(self) -> HouseholdCreate:
        _dates_in_order(self.move_in_on, self.move_out_on)
        return self


class HouseholdUpdate(InputModel):
    role: HouseholdRole | None = None
    move_in_on: Day | None = None
    move_out_on: Day | None = None


class HouseholdRead(OutputModel):
    id: UUID
    partner_id: UUID
    site_id: UUID
    unit_id: UUID
    person_id: UUID
    role: HouseholdRole
    move_in_on: date | None
    move_out_on: date | None
    created_at: datetime
    updated_at: datetime


class HouseholdQuery(ListQuery):
    site_id: UUID | None = None
    unit_id: UUID | None = None
    person_id: UUID | None = None
    role: HouseholdRole | None = None
    active_on: Day | None = Field(None, description="Only households living there that day.")
