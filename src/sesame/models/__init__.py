"""Every ORM table, in one package so that relations between domains create no import cycles."""

from sesame.models.auth import ApiKey, AuthSession, OtpChallenge, RefreshToken, SubjectKind
from sesame.models.base import Base
from sesame.models.people import Household, HouseholdRole, Person, PersonKind
from sesame.models.platform import IdempotencyRecord, RateLimitCounter
from sesame.models.sites import Building, Entrance, EntranceKind, Site, SiteKind, Unit
from sesame.models.staff import StaffAccount, StaffRole, StaffSiteScope
from sesame.models.tenancy import Partner, PartnerKind

__all__ = [
    "ApiKey",
    "AuthSession",
    "Base",
    "Building",
    "Entrance",
    "EntranceKind",
    "Household",
    "HouseholdRole",
    "IdempotencyRecord",
    "OtpChallenge",
    "Partner",
    "PartnerKind",
    "Person",
    "PersonKind",
    "RateLimitCounter",
    "RefreshToken",
    "Site",
    "SiteKind",
    "StaffAccount",
    "StaffRole",
    "StaffSiteScope",
    "SubjectKind",
    "Unit",
]
