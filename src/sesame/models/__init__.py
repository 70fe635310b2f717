"""Every ORM table, in one package so that relations between domains create no import cycles."""

from sesame.models.auth import ApiKey, AuthSession, OtpChallenge, RefreshToken, SubjectKind
from sesame.models.base import Base
from sesame.models.devices import (
    ActionAttempt,
    AttemptPhase,
    AttemptStatus,
    Device,
    DeviceEventRecord,
    DeviceKind,
    DeviceStatus,
)
from sesame.models.jobs import Job, JobStatus
from sesame.models.keys import (
    AccessEvent,
    AccessMethod,
    AccessResult,
    Key,
    KeyKind,
    KeyStatus,
    PinCode,
    PinStatus,
    SiteSigningKey,
    TargetKind,
)
from sesame.models.ledger import (
    LedgerCheckpoint,
    LedgerEntry,
    LedgerKey,
    LedgerNode,
    LedgerState,
    LedgerWitnessState,
)
from sesame.models.notifications import (
    Alert,
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Destination,
    DestinationKind,
    NotificationState,
    Preference,
    WebhookEndpoint,
)
from sesame.models.outbox import OutboxMessage
from sesame.models.people import Household, HouseholdRole, Person, PersonKind
from sesame.models.platform import IdempotencyRecord, RateLimitCounter
from sesame.models.sites import Building, Entrance, EntranceKind, Site, SiteKind, Unit
from sesame.models.staff import StaffAccount, StaffRole, StaffSiteScope
from sesame.models.tenancy import Partner, PartnerKind

__all__ = [
    "AccessEvent",
    "AccessMethod",
    "AccessResult",
    "ActionAttempt",
    "Alert",
    "ApiKey",
    "AttemptPhase",
    "AttemptStatus",
    "AuthSession",
    "Base",
    "Building",
    "Campaign",
    "CampaignStatus",
    "Delivery",
    "DeliveryStatus",
    "Destination",
    "DestinationKind",
    "Device",
    "DeviceEventRecord",
    "DeviceKind",
    "DeviceStatus",
    "Entrance",
    "EntranceKind",
    "Household",
    "HouseholdRole",
    "IdempotencyRecord",
    "Job",
    "JobStatus",
    "Key",
    "KeyKind",
    "KeyStatus",
    "LedgerCheckpoint",
    "LedgerEntry",
    "LedgerKey",
    "LedgerNode",
    "LedgerState",
    "LedgerWitnessState",
    "NotificationState",
    "OtpChallenge",
    "OutboxMessage",
    "Partner",
    "PartnerKind",
    "Person",
    "PersonKind",
    "PinCode",
    "PinStatus",
    "Preference",
    "RateLimitCounter",
    "RefreshToken",
    "Site",
    "SiteKind",
    "SiteSigningKey",
    "StaffAccount",
    "StaffRole",
    "StaffSiteScope",
    "SubjectKind",
    "TargetKind",
    "Unit",
    "WebhookEndpoint",
]
