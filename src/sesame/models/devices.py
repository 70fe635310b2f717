"""Devices, the commands sent to them (action attempts) and the events they report."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sesame.models.base import Base, IdMixin, TimestampMixin, utcnow
from sesame.models.tenancy import str_enum


class DeviceKind(enum.StrEnum):
    ENTRANCE_READER = "entrance_reader"
    DOOR_LOCK = "door_lock"
    DOORBELL = "doorbell"
    ZWAVE_HUB = "zwave_hub"
    ELEVATOR_AGENT = "elevator_agent"


class DeviceStatus(enum.StrEnum):
    ACTIVE = "active"
    DECOMMISSIONED = "decommissioned"


class Device(IdMixin, TimestampMixin, Base):
    """A provisioned device. Its id is its MQTT username and client id.

    ``credential_hash`` is the device password in Mosquitto's password-file form
    (PBKDF2-SHA512), so the embedded broker and a generated Mosquitto configuration check
    the same secret; None once revoked.
    """

    __tablename__ = "devices"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (
        Index(None, "partner_id"),
        Index(None, "site_id"),
        Index(None, "entrance_id"),
        Index(None, "online", "last_seen_at"),
    )

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    site_id: Mapped[UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    entrance_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("entrances.id", ondelete="RESTRICT")
    )
    unit_id: Mapped[UUID | None] = mapped_column(ForeignKey("units.id", ondelete="RESTRICT"))
    kind: Mapped[DeviceKind] = mapped_column(str_enum(DeviceKind, "device_kind"))
    name: Mapped[str] = mapped_column(String(200))
    vendor: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(100))
    firmware: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[DeviceStatus] = mapped_column(
        str_enum(DeviceStatus, "device_status"), default=DeviceStatus.ACTIVE
    )
    credential_hash: Mapped[str | None] = mapped_column(String(200))
    credentials_issued_at: Mapped[datetime | None]
    decommissioned_at: Mapped[datetime | None]

    online: Mapped[bool] = mapped_column(default=False)
    connected_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    boot_id: Mapped[str | None] = mapped_column(String(64))
    # ISO timestamps of recent unclean disconnects, for the flaky-connection warning.
    recent_disconnects: Mapped[list[str]] = mapped_column(default=list)
    reported_state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Health as data: {"code": {"message", "created_at"}}; see sesame.devices.health.
    errors: Mapped[dict[str, Any]] = mapped_column(default=dict)
    warnings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The device clock against the server's, from its last time exchange (positive: ahead).
    clock_offset_ms: Mapped[int | None] = mapped_column(BigInteger)  # a reset RTC: decades
    clock_delay_ms: Mapped[int | None]
    clock_checked_at: Mapped[datetime | None]


class AttemptStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCESS = "success"
    ERROR = "error"
    EXPIRED = "expired"


class AttemptPhase(enum.StrEnum):
    QUEUED = "queued"  # waiting for the device's previous command or for the device
    SENT = "sent"  # published; waiting for the result
    DONE = "done"


class ActionAttempt(IdMixin, Base):
    """One command to one device, persisted before it is sent."""

    __tablename__ = "action_attempts"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (
        Index(None, "device_id", "phase", "created_at"),
        Index(None, "phase", "expires_at"),
        Index(None, "partner_id"),
    )

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    site_id: Mapped[UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    device_id: Mapped[UUID] = mapped_column(ForeignKey("devices.id", ondelete="RESTRICT"))
    action: Mapped[str] = mapped_column(String(48))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)  # secrets masked
    sealed_params: Mapped[bytes | None] = mapped_column(LargeBinary)  # the real ones, sealed
    status: Mapped[AttemptStatus] = mapped_column(
        str_enum(AttemptStatus, "attempt_status"), default=AttemptStatus.PENDING
    )
    phase: Mapped[AttemptPhase] = mapped_column(
        str_enum(AttemptPhase, "attempt_phase"), default=AttemptPhase.QUEUED
    )
    was_confirmed_by_device: Mapped[bool] = mapped_column(default=False)
    error: Mapped[dict[str, Any] | None]
    result: Mapped[dict[str, Any] | None]
    requested_by: Mapped[str | None] = mapped_column(String(120))
    send_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_sent_at: Mapped[datetime | None]
    last_sent_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]


class DeviceEventRecord(IdMixin, Base):
    """An event a device reported, stored once per (device, event_id)."""

    __tablename__ = "device_events"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (
        UniqueConstraint("device_id", "event_id"),
        Index(None, "partner_id", "id"),
        Index(None, "site_id", "id"),
        Index(None, "device_id", "id"),
        Index(None, "occurred_at"),
    )

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    site_id: Mapped[UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    device_id: Mapped[UUID] = mapped_column(ForeignKey("devices.id", ondelete="RESTRICT"))
    event_id: Mapped[UUID]
    type: Mapped[str] = mapped_column(String(48))
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
