"""Notifications: where people can be reached, what they want, and every delivery.

See ``sesame.notifications`` for how events become deliveries and deliveries are sent.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from sesame.models.base import Base, IdMixin, TimestampMixin
from sesame.models.tenancy import str_enum


class DestinationKind(enum.StrEnum):
    FCM = "fcm"  # an app install's FCM registration token
    WEBPUSH = "webpush"  # a browser's Web Push subscription
    EMAIL = "email"


class Destination(IdMixin, TimestampMixin, Base):
    """One place a person or a staff member is reached. Exactly one owner.

    An e-mail address is inactive (``deactivated_reason`` ``unconfirmed``) until its owner
    enters the code sent to it: ``confirmation_*`` hold the code's keyed digest, its
    expiry, when it was sent and the wrong tries so far."""

    __tablename__ = "notification_destinations"
    __tenant_columns__ = ("partner_id", None)
    __table_args__ = (
        UniqueConstraint("person_id", "kind", "address_digest"),
        UniqueConstraint("staff_id", "kind", "address_digest"),
        Index(None, "kind", "address_digest"),
        Index(None, "person_id", "active"),
        Index(None, "staff_id", "active"),
        Index(None, "partner_id"),
    )

    partner_id: Mapped[UUID | None] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    person_id: Mapped[UUID | None] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    staff_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("staff_accounts.id", ondelete="CASCADE")
    )
    kind: Mapped[DestinationKind] = mapped_column(str_enum(DestinationKind, "destination_kind"))
    address: Mapped[str] = mapped_column(Text)  # token, endpoint URL or e-mail address
    address_digest: Mapped[str] = mapped_column(String(64))  # finds an address (long URLs)
    install_id: Mapped[str | None] = mapped_column(String(200))  # FCM: the app install
    keys: Mapped[dict[str, Any]] = mapped_column(default=dict)  # Web Push: p256dh, auth
    label: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    deactivated_at: Mapped[datetime | None]
    deactivated_reason: Mapped[str | None] = mapped_column(String(64))
    last_sent_at: Mapped[datetime | None]
    confirmation_digest: Mapped[str | None] = mapped_column(String(64))
    confirmation_expires_at: Mapped[datetime | None]
    confirmation_sent_at: Mapped[datetime | None]
    confirmation_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Preference(IdMixin, TimestampMixin, Base):
    """A person's or staff member's choice for one category: on or off, and through which
    channels (None: all). Critical categories ignore it."""

    __tablename__ = "notification_preferences"
    __tenant_columns__ = ("partner_id", None)
    __table_args__ = (
        UniqueConstraint("person_id", "category"),
        UniqueConstraint("staff_id", "category"),
    )

    partner_id: Mapped[UUID | None] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    person_id: Mapped[UUID | None] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    staff_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("staff_accounts.id", ondelete="CASCADE")
    )
    category: Mapped[str] = mapped_column(String(32))
    enabled: Mapped[bool] = mapped_column(default=True)
    channels: Mapped[list[str] | None]


class WebhookEndpoint(IdMixin, TimestampMixin, Base):
    """A partner's URL for signed event webhooks (Standard Webhooks). ``partner_id`` None:
    the platform's own, for operational alerts. Secrets are sealed; during a rotation the
    previous one stays valid until ``previous_expires_at`` and both sign."""

    __tablename__ = "webhook_endpoints"
    __tenant_columns__ = ("partner_id", None)
    __table_args__ = (Index(None, "partner_id"),)

    partner_id: Mapped[UUID | None] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(200))
    event_types: Mapped[list[str]] = mapped_column(default=list)  # empty: every event
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)
    sealed_previous_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_expires_at: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(default=True)


class DeliveryStatus(enum.StrEnum):
    QUEUED = "queued"  # waiting to be sent (or to be retried at next_attempt_at)
    SENT = "sent"
    FAILED = "failed"  # refused for good, or the destination is gone
    DEAD = "dead"  # retried until its budget ran out


class Delivery(IdMixin, TimestampMixin, Base):
    """One message to one destination. ``transaction_id`` is unique: an event or campaign
    delivered twice to the same place is the same row (and downstream, the same id)."""

    __tablename__ = "notification_deliveries"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (
        Index(None, "partner_id", "id"),
        Index(None, "person_id", "id"),
        Index(None, "campaign_id", "status"),
    )

    transaction_id: Mapped[str] = mapped_column(String(160), unique=True)
    partner_id: Mapped[UUID | None] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    site_id: Mapped[UUID | None]
    event_type: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))
    person_id: Mapped[UUID | None]
    staff_id: Mapped[UUID | None]
    destination_id: Mapped[UUID | None]
    webhook_endpoint_id: Mapped[UUID | None]
    campaign_id: Mapped[UUID | None]
    outbox_id: Mapped[int | None] = mapped_column(BigInteger)
    locale: Mapped[str] = mapped_column(String(35))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[DeliveryStatus] = mapped_column(
        str_enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    leased_until: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(String(300))
    provider_id: Mapped[str | None] = mapped_column(String(300))
    sent_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


# Only what waits is claimed: a delivery leaves this index when it ends, and its last
# update writes no entry into it.
Index(
    "ix_notification_deliveries_due",
    Delivery.next_attempt_at,
    postgresql_where=Delivery.status == DeliveryStatus.QUEUED,
    sqlite_where=Delivery.status == DeliveryStatus.QUEUED,
)


class CampaignStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    SENDING = "sending"  # deliveries being queued, page by page
    QUEUED = "queued"  # every delivery queued; they go out through the usual path
    CANCELLED = "cancelled"


class Campaign(IdMixin, TimestampMixin, Base):
    """A message from staff to every resident of a site or one building."""

    __tablename__ = "notification_campaigns"
    __tenant_columns__ = ("partner_id", "site_id")
    __table_args__ = (Index(None, "partner_id", "id"),)

    partner_id: Mapped[UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    site_id: Mapped[UUID] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    building_id: Mapped[UUID | None] = mapped_column(ForeignKey("buildings.id", ondelete="CASCADE"))
    content: Mapped[dict[str, Any]]  # {"ko": {"title", "body"}, "en": {...}}
    send_at: Mapped[datetime]
    status: Mapped[CampaignStatus] = mapped_column(str_enum(CampaignStatus, "campaign_status"))
    created_by: Mapped[str | None] = mapped_column(String(120))
    cursor: Mapped[str | None] = mapped_column(String(64))  # the last person queued
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime | None]


class NotificationState(Base):
    """The router's place in the outbox (one row)."""

    __tablename__ = "notification_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    outbox_cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime | None]


class Alert(IdMixin, Base):
    """An operational alert, firing or resolved; one row per firing, so several processes
    raise it once."""

    __tablename__ = "notification_alerts"
    __table_args__ = (Index(None, "name", "resolved_at"),)

    name: Mapped[str] = mapped_column(String(64))
    firing_key: Mapped[str | None] = mapped_column(String(80), unique=True)  # name while firing
    value: Mapped[float]
    threshold: Mapped[float]
    message: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]


class DeviceOutage(Base):
    """A device's going offline, as notifications see it: alerted only once it has stayed
    offline for a grace period, at most once per window, with the flaps in between
    counted. ``offline_since`` is set while an alert may be due (the latest
    disconnection), ``first_offline_at`` and ``flaps`` summarise since the last alert."""

    __tablename__ = "notification_device_outages"
    __table_args__ = (Index(None, "offline_since"),)

    device_id: Mapped[UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    offline_since: Mapped[datetime | None]
    first_offline_at: Mapped[datetime | None]
    flaps: Mapped[int] = mapped_column(Integer, default=0)
    last_alert_at: Mapped[datetime | None]
