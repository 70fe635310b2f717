"""Request and response bodies of the notification API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import BaseModel, Field, field_validator, model_validator

from sesame.api.crud import InputModel, ListQuery, OutputModel
from sesame.kit.types import Instant
from sesame.models import CampaignStatus, DeliveryStatus, DestinationKind
from sesame.notifications.catalog import CATEGORIES, LOCALES

Channel = Literal["fcm", "webpush", "email"]
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$"


def _http_url(value: str) -> str:
    """An http(s) URL; where it may point is the egress policy's to say (the service)."""
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ValueError("the port must be a number from 0 to 65535") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an http(s) URL")
    return value


class FcmDestination(InputModel):
    kind: Literal["fcm"]
    token: str = Field(min_length=20, max_length=4096, description="The FCM registration token.")
    install_id: str = Field(
        min_length=1,
        max_length=200,
        description="The app install; a new token replaces its old one.",
    )
    label: str | None = Field(None, max_length=200)


class WebPushKeys(InputModel):
    p256dh: str = Field(min_length=80, max_length=100)
    auth: str = Field(min_length=16, max_length=32)


class WebPushDestination(InputModel):
    kind: Literal["webpush"]
    endpoint: str = Field(
        max_length=2000,
        description="The subscription's endpoint: https on a public host, outside development.",
    )
    keys: WebPushKeys
    label: str | None = Field(None, max_length=200)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return _http_url(value)


class EmailDestination(InputModel):
    kind: Literal["email"]
    address: str = Field(max_length=254, pattern=EMAIL_PATTERN)
    label: str | None = Field(None, max_length=200)


DestinationIn = Annotated[
    FcmDestination | WebPushDestination | EmailDestination, Field(discriminator="kind")
]


class DestinationRead(OutputModel):
    id: UUID
    kind: DestinationKind
    label: str | None
    install_id: str | None
    shown: str = Field(description="Enough of the address to recognise it; never a whole token.")
    active: bool
    deactivated_reason: str | None
    created_at: datetime


class ConfirmationIn(InputModel):
    code: str = Field(pattern=r"^[0-9]{8}$", description="The eight digits sent to the address.")


class PreferenceIn(InputModel):
    category: str = Field(json_schema_extra={"enum": list(CATEGORIES)})
    enabled: bool = True
    channels: list[Channel] | None = Field(None, description="Only these channels; null: all.")

    @field_validator("category")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in CATEGORIES:
            raise ValueError(f"one of {', '.join(CATEGORIES)}")
        return value


class PreferenceRead(BaseModel):
    category: str
    description: str
    critical: bool = Field(description="Always delivered, whatever the preference says.")
    enabled: bool
    channels: list[str] | None


class WebhookEndpointCreate(InputModel):
    url: str = Field(max_length=2000)
    description: str | None = Field(None, max_length=200)
    event_types: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=100, description="Event types to send; empty: all."
    )
    partner_id: UUID | None = Field(
        None, description="Platform staff: the partner; left out, a platform endpoint."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class WebhookEndpointUpdate(InputModel):
    url: str | None = Field(None, max_length=2000)
    description: str | None = Field(None, max_length=200)
    event_types: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=100)
    active: bool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)


class WebhookEndpointRead(OutputModel):
    id: UUID
    partner_id: UUID | None
    url: str
    description: str | None
    event_types: list[str]
    active: bool
    previous_expires_at: datetime | None
    created_at: datetime
    secret: str | None = Field(
        None, description="The signing secret (`whsec_…`): shown once, at creation or rotation."
    )


class WebhookEndpointQuery(ListQuery):
    active: bool | None = None


class Content(InputModel):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=2000)


class CampaignCreate(InputModel):
    site_id: UUID
    building_id: UUID | None = Field(None, description="Only this building's residents.")
    content: dict[str, Content] = Field(description='By language: {"ko": {...}, "en": {...}}.')
    send_at: Instant | None = Field(None, description="Later; left out: now.")

    @model_validator(mode="after")
    def _check(self) -> CampaignCreate:
        if not self.content or any(lang not in LOCALES for lang in self.content):
            raise ValueError(f"content needs at least one of {', '.join(LOCALES)}, and no other")
        if self.send_at is not None and self.send_at.tzinfo is None:
            raise ValueError("send_at needs a UTC offset")
        return self


class CampaignRead(OutputModel):
    id: UUID
    site_id: UUID
    building_id: UUID | None
    content: dict[str, Any]
    send_at: datetime
    status: CampaignStatus
    recipients: int = Field(description="Deliveries queued so far.")
    queued_at: datetime | None
    created_at: datetime
    deliveries: dict[str, int] | None = Field(None, description="Deliveries by status.")


class CampaignQuery(ListQuery):
    site_id: UUID | None = None
    status: CampaignStatus | None = None


class DeliveryRead(OutputModel):
    id: UUID
    transaction_id: str
    event_type: str
    category: str
    channel: str
    status: DeliveryStatus
    attempts: int
    person_id: UUID | None
    staff_id: UUID | None
    destination_id: UUID | None
    webhook_endpoint_id: UUID | None
    campaign_id: UUID | None
    title: str
    error_code: str | None
    error: str | None
    provider_id: str | None
    next_attempt_at: datetime
    created_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None


class DeliveryQuery(ListQuery):
    status: DeliveryStatus | None = None
    channel: str | None = Field(None, max_length=16)
    category: str | None = Field(None, max_length=32)
    person_id: UUID | None = None
    campaign_id: UUID | None = None
    site_id: UUID | None = None


class WebPushKey(BaseModel):
    public_key: str = Field(description="The VAPID key for `applicationServerKey` (base64url).")
