"""Durable jobs: work due at a time, claimed by one worker at a time (see sesame.jobs)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Enum, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sesame.models.base import Base, IdMixin, TimestampMixin


class JobStatus(enum.StrEnum):
    SCHEDULED = "scheduled"  # waiting for due_at (also: waiting to be retried)
    RUNNING = "running"  # claimed by lease_owner until lease_until
    SUCCEEDED = "succeeded"  # one-off jobs only; recurring ones go back to scheduled
    DEAD = "dead"  # failed max_attempts times; last_error says why


class Job(IdMixin, TimestampMixin, Base):
    __tablename__ = "jobs"
    __table_args__ = (Index(None, "status", "due_at"),)

    kind: Mapped[str] = mapped_column(String(64))  # the handler
    key: Mapped[str] = mapped_column(String(200), unique=True)  # one job per key
    payload: Mapped[dict[str, Any]]
    due_at: Mapped[datetime]
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, native_enum=False, length=16, validate_strings=True),
        default=JobStatus.SCHEDULED,
    )
    # Recurring jobs: a cron expression read in a time zone (the site's).
    cron: Mapped[str | None] = mapped_column(String(120))
    time_zone: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=8)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    last_run_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    partner_id: Mapped[UUID | None]
