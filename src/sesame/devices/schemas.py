from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import Field, field_validator

from sesame.api.crud import InputModel, ListQuery, OutputModel
from sesame.devices import health
from sesame.devices.drivers import driver_for
from sesame.kit.types import Instant, Name
from sesame.models import AttemptStatus, DeviceKind, DeviceStatus

Short = Field(min_length=1, max_length=100)


class DeviceCreate(InputModel):
    site_id: UUID
    kind: DeviceKind
    name: Name
    vendor: str = Field("sesame", min_length=1, max_length=100)
    model: str = Field("generic", min_length=1, max_length=100)
    firmware: str | None = Field(None, max_length=64)
    entrance_id: UUID | None = Field(None, description="The entrance it opens or guards.")
    unit_id: UUID | None = Field(None, description="The unit it belongs to (a unit door lock).")


class DeviceUpdate(InputModel):
    name: Name | None = None
    vendor: str | None = Field(None, min_length=1, max_length=100)
    model: str | None = Field(None, min_length=1, max_length=100)
    entrance_id: UUID | None = None
    unit_id: UUID | None = None


class HealthIssue(OutputModel):
    code: str = Field(description="Stable code, e.g. `device_offline`; tolerate unknown ones.")
    message: str
    created_at: datetime


class DeviceRead(OutputModel):
    id: UUID
    partner_id: UUID
    site_id: UUID
    entrance_id: UUID | None
    unit_id: UUID | None
    kind: DeviceKind
    name: str
    vendor: str
    model: str
    firmware: str | None
    status: DeviceStatus
    online: bool
    connected_at: datetime | None
    last_seen_at: datetime | None
    reported_state: dict[str, Any]
    errors: list[HealthIssue]
    warnings: list[HealthIssue]
    clock_offset_ms: int | None = Field(
        None, description="The device clock minus the server's at its last time exchange."
    )
    clock_delay_ms: int | None = Field(None, description="That exchange's round trip.")
    clock_checked_at: datetime | None = None
    features: list[str] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)
    credentials_issued_at: datetime | None
    decommissioned_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @field_validator("errors", "warnings", mode="before")
    @classmethod
    def _issues(cls, value: Any) -> Any:
        return health.as_list(value) if isinstance(value, dict) else value

    @classmethod
    def of(cls, device: Any) -> DeviceRead:
        read = cls.model_validate(device)
        return read.model_copy(update=driver_for(device.kind).describe())


class MqttCredentials(OutputModel):
    url: str = Field(description="The broker to connect to.")
    client_id: str
    username: str
    password: str = Field(description="Shown once; Sesame keeps only a hash.")
    topic_prefix: str


class DeviceCredentials(OutputModel):
    device_id: UUID
    issued_at: datetime
    mqtt: MqttCredentials


class DeviceProvisioned(DeviceRead):
    credentials: DeviceCredentials


class DeviceQuery(ListQuery):
    site_id: UUID | None = None
    kind: DeviceKind | None = None
    entrance_id: UUID | None = None
    unit_id: UUID | None = None
    online: bool | None = None
    status: DeviceStatus | None = None


class CommandRequest(InputModel):
    action: str = Field(min_length=1, max_length=48, description="One of the device's `actions`.")
    params: dict[str, Any] = Field(default_factory=dict)
    ttl_seconds: int | None = Field(
        None,
        ge=1,
        le=300,
        description="The command is never executed after this; default per action.",
    )


class OpenRequest(InputModel):
    duration_s: int | None = Field(None, ge=1, le=30)
    ttl_seconds: int | None = Field(None, ge=1, le=30)


class AttemptError(OutputModel):
    type: str = Field(
        description="`device_timeout`, `command_expired`, `device_rejected`, "
        "`device_failed`, ...; tolerate unknown ones."
    )
    message: str
    code: str | None = Field(None, description="The device's own error code, if it gave one.")


class ActionAttemptRead(OutputModel):
    id: UUID
    device_id: UUID
    site_id: UUID
    action: str
    params: dict[str, Any]
    status: AttemptStatus
    was_confirmed_by_device: bool
    error: AttemptError | None
    result: dict[str, Any] | None
    send_count: int
    created_at: datetime
    first_sent_at: datetime | None
    completed_at: datetime | None
    expires_at: datetime
    duration_ms: float | None = Field(None, description="From creation to completion.")

    @classmethod
    def of(cls, attempt: Any) -> ActionAttemptRead:
        read = cls.model_validate(attempt)
        if attempt.completed_at is not None:
            elapsed = (attempt.completed_at - attempt.created_at).total_seconds() * 1000
            read = read.model_copy(update={"duration_ms": round(elapsed, 3)})
        return read


class AttemptQuery(ListQuery):
    device_id: UUID | None = None
    status: AttemptStatus | None = None
    action: str | None = Field(None, max_length=48)


class EventRead(OutputModel):
    id: UUID
    device_id: UUID
    site_id: UUID
    event_id: UUID
    type: str
    occurred_at: datetime
    received_at: datetime
    data: dict[str, Any]


class EventQuery(ListQuery):
    device_id: UUID | None = None
    site_id: UUID | None = None
    type: str | None = Field(None, max_length=48)
    since: Instant | None = Field(None, description="Only events that occurred at or after.")
