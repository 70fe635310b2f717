"""Keys (who may open which doors, when), site signing keys, PIN codes, the access log."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import ForeignKey, Index, LargeBinary, String, false
from sqlalchemy.orm import Mapped, mapped_column

from sesame.models.base import Base, IdMixin, TimestampMixin, utcnow
from sesame.models.tenancy import str_enum


class KeyKind(enum.StrEnum):
    RESIDENT = "resident"  # follows household membership
    HOUSEHOLD = "household"  # shared by a resident
    GUEST = "guest"
    COURIER = "courier"
    STAFF = "staff"
    INSTALLER = "installer"


class KeyStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    EXPIRED = "expired"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class KeyReason(enum.StrEnum):
    """Why a key was issued or revoked: a code, never free text, since it is recorded in
    the ledger (which cannot forget) and shown to staff."""

    MOVE_IN = "move_in"
    GUEST_PASS = "guest_pass"  # noqa: S105 - a reason code, not a password
    MOVED_OUT = "moved_out"
    REVOKED_BY_STAFF = "revoked_by_staff"
    REVOKED_BY_PARTNER = "revoked_by_partner"  # through a partner API key
    REVOKED_BY_RESIDENT = "revoked_by_resident"


class TargetKind(enum.StrEnum):
    """What a key opens: every shared entrance of a site, of a building, a unit (with its
    building's and site's shared entrances), or one entrance."""

    SITE = "site"
    BUILDING = "building"
    UNIT = "unit"
    ENTRANCE = "entrance"


class Key(IdMixin, TimestampMixin, Base):
    __tablename__ = "keys"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (
        Index(None, "person_id", "status"),
        Index(None, "site_id", "status"),
        Index(None, "unit_id"),
        Index(None, "partner_id"),
        Index(None, "parent_key_id"),
    )

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    site_id: Mapped[UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    person_id: Mapped[UUID] = mapped_column(ForeignKey("people.id", ondelete="RESTRICT"))
    kind: Mapped[KeyKind] = mapped_column(str_enum(KeyKind, "key_kind"))
    status: Mapped[KeyStatus] = mapped_column(str_enum(KeyStatus, "key_status"))
    name: Mapped[str | None] = mapped_column(String(200))
    target_kind: Mapped[TargetKind] = mapped_column(str_enum(TargetKind, "key_target"))
    building_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("buildings.id", ondelete="RESTRICT")
    )
    unit_id: Mapped[UUID | None] = mapped_column(ForeignKey("units.id", ondelete="RESTRICT"))
    entrance_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("entrances.id", ondelete="RESTRICT")
    )
    starts_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    # {"weekdays": [0..6, Monday = 0], "start": "HH:MM", "end": "HH:MM"}, in the site's zone
    schedule: Mapped[dict[str, Any] | None]
    max_uses: Mapped[int | None]
    uses_count: Mapped[int] = mapped_column(default=0)
    household_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("households.id", ondelete="SET NULL")
    )
    parent_key_id: Mapped[UUID | None] = mapped_column(ForeignKey("keys.id", ondelete="SET NULL"))
    # Suspended because its parent is: resumed when the parent is.
    suspended_with_parent: Mapped[bool] = mapped_column(default=False, server_default=false())
    carrier: Mapped[str | None] = mapped_column(String(100))  # courier keys: the carrier account
    # Who issued it, as an opaque reference: ``staff:<id>``, ``api_key:<id>``,
    # ``resident:<person id>`` or ``household``; never a phone number or a name.
    issued_by: Mapped[str | None] = mapped_column(String(120))
    issued_by_person_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("people.id", ondelete="SET NULL")
    )
    pass_id: Mapped[UUID | None]  # the credential id of a guest's QR pass, stable for its life
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(200))  # a KeyReason


class SiteSigningKey(IdMixin, Base):
    """An Ed25519 key a site signs credentials with; readers of the site trust its public
    half. The private half is sealed under a key derived from the server secret."""

    __tablename__ = "site_signing_keys"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (Index(None, "site_id", "created_at"),)

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    site_id: Mapped[UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    public_key: Mapped[str] = mapped_column(String(64))  # base64url, raw 32 bytes
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    active: Mapped[bool] = mapped_column(default=True)
    retired_at: Mapped[datetime | None]


class PinStatus(enum.StrEnum):
    UNSET = "unset"
    SETTING = "setting"
    SET = "set"
    REMOVING = "removing"
    REMOVED = "removed"
    UNKNOWN = "unknown"


class PinCode(IdMixin, TimestampMixin, Base):
    """A PIN on a door lock. What should be on the lock is kept here and reconciled with it.

    The code itself is sealed; ``code_digest`` (keyed by lock) finds duplicates without
    reading it."""

    __tablename__ = "pin_codes"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (
        Index(None, "device_id", "status"),
        Index(None, "device_id", "code_digest"),
        Index(None, "partner_id"),
        Index(None, "key_id"),
    )

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    site_id: Mapped[UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    device_id: Mapped[UUID] = mapped_column(ForeignKey("devices.id", ondelete="RESTRICT"))
    key_id: Mapped[UUID | None] = mapped_column(ForeignKey("keys.id", ondelete="SET NULL"))
    person_id: Mapped[UUID | None] = mapped_column(ForeignKey("people.id", ondelete="SET NULL"))
    name: Mapped[str | None] = mapped_column(String(200))
    sealed_code: Mapped[bytes] = mapped_column(LargeBinary)
    code_digest: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    status: Mapped[PinStatus] = mapped_column(str_enum(PinStatus, "pin_status"))
    slot: Mapped[int | None]
    wanted: Mapped[bool] = mapped_column(default=True)  # False once deleted: remove from lock
    error: Mapped[dict[str, Any] | None]
    warnings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempt_id: Mapped[UUID | None]  # the command now carrying it to or off the lock
    synced_at: Mapped[datetime | None]


class AccessResult(enum.StrEnum):
    GRANTED = "granted"
    DENIED = "denied"


class AccessMethod(enum.StrEnum):
    REMOTE = "remote"
    MOBILE_CREDENTIAL = "mobile_credential"
    QR = "qr"
    PIN = "pin"
    CARD = "card"
    MANUAL = "manual"


class AccessEvent(IdMixin, Base):
    """One grant or refusal at a door, from the API, a reader or a lock."""

    __tablename__ = "access_events"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (
        Index(None, "partner_id", "id"),
        Index(None, "site_id", "id"),
        Index(None, "key_id", "id"),
        Index(None, "person_id", "id"),
        Index(None, "entrance_id", "id"),
    )

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    site_id: Mapped[UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    at: Mapped[datetime]
    result: Mapped[AccessResult] = mapped_column(str_enum(AccessResult, "access_result"))
    method: Mapped[AccessMethod] = mapped_column(str_enum(AccessMethod, "access_method"))
    reason: Mapped[str | None] = mapped_column(String(64))
    key_id: Mapped[UUID | None] = mapped_column(ForeignKey("keys.id", ondelete="SET NULL"))
    person_id: Mapped[UUID | None] = mapped_column(ForeignKey("people.id", ondelete="SET NULL"))
    entrance_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("entrances.id", ondelete="SET NULL")
    )
    device_id: Mapped[UUID | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    action_attempt_id: Mapped[UUID | None]
    credential_id: Mapped[UUID | None]
    pin_code_id: Mapped[UUID | None]
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
