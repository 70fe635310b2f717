"""What /v1/jobs answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from sesame.models import JobStatus


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    kind: str = Field(description="The handler that runs it.")
    key: str = Field(description="Unique: scheduling the same key again moves this job.")
    status: JobStatus
    due_at: datetime
    cron: str | None = Field(description="For recurring jobs: when, read in time_zone.")
    time_zone: str | None
    attempts: int
    max_attempts: int
    last_error: str | None = Field(description="Why the last attempt failed, if it did.")
    lease_owner: str | None = Field(description="The worker running it, or that ran it last.")
    lease_until: datetime | None
    last_run_at: datetime | None
    finished_at: datetime | None
    partner_id: UUID | None
    payload: dict[str, Any]
    created_at: datetime
    updated_at: datetime
