from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, field_validator, model_validator

from sesame.api.crud import InputModel, ListQuery, OutputModel
from sesame.kit.types import Instant, Name, Phone
from sesame.models import AccessMethod, AccessResult, KeyKind, KeyStatus, PinStatus, TargetKind

_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class ScheduleIn(InputModel):
    weekdays: list[int] = Field(
        min_length=1,
        max_length=7,
        description="0 = Monday ... 6 = Sunday.",
        json_schema_extra={"items": {"type": "integer", "minimum": 0, "maximum": 6}},
    )
    start: str = Field(
        description="Local time in the site's zone, HH:MM.",
        json_schema_extra={"pattern": _CLOCK.pattern},
    )
    end: str = Field(
        description="HH:MM; at or before start: runs past midnight.",
        json_schema_extra={"pattern": _CLOCK.pattern},
    )

    @field_validator("weekdays")
    @classmethod
    def _days(cls, value: list[int]) -> list[int]:
        if any(day < 0 or day > 6 for day in value):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
        return sorted(set(value))

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError("use HH:MM, 00:00 to 23:59")
        return value


class Window(InputModel):
    """A validity window: aware instants of the years 2000 to 2199 (``Instant``), the end
    after the start. Creates and updates alike use it."""

    starts_at: Instant | None = None
    ends_at: Instant | None = None

    @model_validator(mode="after")
    def _order(self) -> Window:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class KeyCreate(Window):
    person_id: UUID
    kind: KeyKind = Field(description="`resident` keys follow households; staff issue the rest.")
    name: Name | None = None
    site_id: UUID | None = Field(None, description="Exactly one target: a site ...")
    building_id: UUID | None = Field(None, description="... a building ...")
    unit_id: UUID | None = Field(None, description="... a unit ...")
    entrance_id: UUID | None = Field(None, description="... or one entrance.")
    schedule: ScheduleIn | None = None
    max_uses: int | None = Field(None, ge=1, le=10_000)
    carrier: str | None = Field(None, max_length=100, description="Courier keys: the carrier.")

    @model_validator(mode="after")
    def _one_target(self) -> KeyCreate:
        targets = [
            t
            for t in (self.site_id, self.building_id, self.unit_id, self.entrance_id)
            if t is not None
        ]
        if len(targets) != 1:
            raise ValueError("give exactly one of site_id, building_id, unit_id, entrance_id")
        return self


class KeyUpdate(Window):
    name: Name | None = None
    status: Literal["active", "suspended"] | None = Field(
        None, description="Suspend a key, or resume a suspended one."
    )
    schedule: ScheduleIn | None = None
    max_uses: int | None = Field(None, ge=1, le=10_000)


class KeyRead(OutputModel):
    id: UUID
    partner_id: UUID
    site_id: UUID
    person_id: UUID
    kind: KeyKind
    status: KeyStatus
    name: str | None
    target_kind: TargetKind
    building_id: UUID | None
    unit_id: UUID | None
    entrance_id: UUID | None
    starts_at: datetime | None
    ends_at: datetime | None
    schedule: dict[str, Any] | None
    max_uses: int | None
    uses_count: int
    carrier: str | None
    parent_key_id: UUID | None
    household_id: UUID | None
    revoked_at: datetime | None
    revoked_reason: str | None
    created_at: datetime
    updated_at: datetime


class KeyQuery(ListQuery):
    site_id: UUID | None = None
    person_id: UUID | None = None
    unit_id: UUID | None = None
    building_id: UUID | None = None
    entrance_id: UUID | None = None
    kind: KeyKind | None = None
    status: KeyStatus | None = None
    carrier: str | None = Field(None, max_length=100)


class ShareRequest(Window):
    phone: Phone
    name: Name
    key_name: Name | None = Field(
        None, description="What to call the key; staff see it. By default 'Shared key'."
    )
    schedule: ScheduleIn | None = Field(
        None, description="Within your key's schedule; left out, your key's applies."
    )


class GuestPassRequest(Window):
    entrance_id: UUID = Field(description="The entrance the pass opens.")
    guest_name: Name
    guest_phone: Phone = Field(description="The guest's phone: the pass is theirs.")
    max_uses: int = Field(1, ge=1, le=100)
    key_name: Name | None = Field(
        None, description="What to call the pass; staff see it. By default 'Guest pass'."
    )
    schedule: ScheduleIn | None = Field(
        None, description="Within your key's schedule; left out, your key's applies."
    )


class GuestPass(BaseModel):
    key: KeyRead
    token: str = Field(description="The pass itself: show it as a QR code at the reader.")
    link: str = Field(description="A page for the guest: the pass as a QR image.")
    png: str
    svg: str


class CredentialRequest(InputModel):
    per_entrance: int = Field(5, ge=1, le=20, description="Single-use tokens per entrance.")


class Credential(BaseModel):
    key_id: UUID
    entrance_id: UUID
    credential_id: UUID
    expires_at: datetime
    token: str


class SigningKeyRead(OutputModel):
    id: UUID
    site_id: UUID
    public_key: str = Field(description="Ed25519, raw 32 bytes, base64url.")
    active: bool
    created_at: datetime
    retired_at: datetime | None


class AccessEventRead(OutputModel):
    id: UUID
    site_id: UUID
    at: datetime
    result: AccessResult
    method: AccessMethod
    reason: str | None
    key_id: UUID | None
    person_id: UUID | None
    entrance_id: UUID | None
    device_id: UUID | None
    action_attempt_id: UUID | None
    credential_id: UUID | None
    pin_code_id: UUID | None


class AccessEventQuery(ListQuery):
    site_id: UUID | None = None
    entrance_id: UUID | None = None
    key_id: UUID | None = None
    person_id: UUID | None = None
    device_id: UUID | None = None
    result: AccessResult | None = None
    method: AccessMethod | None = None
    since: Instant | None = None


class PinCreate(Window):
    device_id: UUID = Field(description="The door lock.")
    code: str | None = Field(
        None, pattern=r"^\d{4,12}$", description="Digits; left out, a valid free code is chosen."
    )
    name: Name | None = None
    key_id: UUID | None = None
    person_id: UUID | None = None


class PinUpdate(Window):
    name: Name | None = None


class PinRead(OutputModel):
    id: UUID
    site_id: UUID
    device_id: UUID
    key_id: UUID | None
    person_id: UUID | None
    name: str | None
    code: str
    kind: Literal["ongoing", "time_bound"]
    starts_at: datetime | None
    ends_at: datetime | None
    status: PinStatus
    slot: int | None
    errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime


class PinQuery(ListQuery):
    site_id: UUID | None = None
    device_id: UUID | None = None
    key_id: UUID | None = None
    person_id: UUID | None = None
    status: PinStatus | None = None


class GenerateRequest(InputModel):
    device_id: UUID


class GeneratedCode(BaseModel):
    code: str
