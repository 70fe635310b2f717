from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import Field

from sesame.api.crud import InputModel, ListQuery, OutputModel
from sesame.kit.types import Name
from sesame.models import PartnerKind


class PartnerCreate(InputModel):
    name: Name
    kind: PartnerKind = PartnerKind.PROPERTY_MANAGER


class PartnerUpdate(InputModel):
    name: Name | None = None
    kind: PartnerKind | None = None


class PartnerRead(OutputModel):
    id: UUID
    name: str
    kind: PartnerKind
    created_at: datetime
    updated_at: datetime


class PartnerQuery(ListQuery):
    kind: PartnerKind | None = None
    q: str | None = Field(None, max_length=100, description="Part of the name.")
