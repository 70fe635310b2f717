from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field, SecretStr

from sesame.api.crud import InputModel, ListQuery, OutputModel
from sesame.auth.principal import API_KEY_SCOPES
from sesame.kit.types import Email, Instant, Name, Phone
from sesame.models import StaffRole
from sesame.people.schemas import HouseholdRead, PersonRead


class LoginRequest(InputModel):
    email: Email
    password: SecretStr = Field(min_length=1, max_length=200)


class RefreshRequest(InputModel):
    refresh_token: SecretStr = Field(min_length=1, max_length=200)


class TokenPair(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme, not a secret
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str = Field(description="Good for one refresh; a new one comes with it.")
    refresh_expires_in: int


class CodeRequest(InputModel):
    phone: Phone


class CodeRequested(BaseModel):
    expires_in: int = Field(description="Seconds the code stays valid, if the phone is known.")


class CodeVerification(InputModel):
    phone: Phone
    code: Annotated[SecretStr, Field(min_length=6, max_length=6)]


class ApiKeyCreate(InputModel):
    name: Name
    scopes: list[str] = Field(
        min_length=1,
        max_length=20,
        description="Any of: " + ", ".join(API_KEY_SCOPES) + " (write implies read).",
    )
    partner_id: UUID | None = Field(None, description="Required for platform staff only.")
    expires_at: Instant | None = None


class ApiKeyUpdate(InputModel):
    name: Name | None = None


class ApiKeyRead(OutputModel):
    id: UUID
    partner_id: UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The whole key. It is shown this once and never again.")


class ApiKeyQuery(ListQuery):
    partner_id: UUID | None = None
    revoked: bool | None = None


class StaffMe(BaseModel):
    kind: Literal["staff"] = "staff"
    id: UUID
    email: str
    name: str
    role: StaffRole
    partner_id: UUID | None
    site_ids: list[UUID]


class ApiKeyMe(BaseModel):
    kind: Literal["api_key"] = "api_key"
    id: UUID
    partner_id: UUID
    name: str
    scopes: list[str]


class ResidentMe(BaseModel):
    kind: Literal["resident"] = "resident"
    phone: str
    people: list[PersonRead]
    households: list[HouseholdRead]


Me = Annotated[StaffMe | ApiKeyMe | ResidentMe, Field(discriminator="kind")]
