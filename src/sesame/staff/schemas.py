from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import Field, SecretStr, StringConstraints

from sesame.api.crud import InputModel, ListQuery, OutputModel
from sesame.kit.types import Email, Name
from sesame.models import StaffRole

Password = Annotated[SecretStr, Field(min_length=12, max_length=200)]
SiteIds = Annotated[list[UUID], Field(max_length=500)]


class StaffCreate(InputModel):
    email: Email
    name: Name
    role: StaffRole
    password: Password = Field(description="At least 12 characters; stored as an argon2 hash.")
    partner_id: UUID | None = Field(
        None, description="Required for platform staff creating a partner's account."
    )
    site_ids: SiteIds = Field(
        default_factory=list, description="Sites a site manager or installer may act on."
    )


class StaffUpdate(InputModel):
    name: Name | None = None
    role: StaffRole | None = None
    password: Password | None = None
    site_ids: SiteIds | None = None
    is_active: bool | None = None


class StaffRead(OutputModel):
    id: UUID
    partner_id: UUID | None
    email: str
    name: str
    role: StaffRole
    site_ids: list[UUID]
    is_active: bool
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime


class StaffQuery(ListQuery):
    partner_id: UUID | None = None
    role: StaffRole | None = None
    email: Annotated[str, StringConstraints(to_lower=True, max_length=254)] | None = None
