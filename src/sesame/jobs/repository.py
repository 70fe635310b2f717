"""SQL for durable jobs: scheduling by key, claiming with a lease, finishing."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sesame.kit.db import dialect_insert
from sesame.kit.ids import new_id
from sesame.models import Job, JobStatus


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def upsert(self, values: dict[str, Any], now: datetime) -> None:
        """Schedule the job named ``values["key"]``: insert it, or make the existing one
        wait for the new time with the new payload (a fresh start: no attempts, no lease).
        A job that is running loses its lease, so its run will not count (see
        ``finish``) and the new schedule wins."""
        insert_ = dialect_insert(self.session.get_bind().dialect)
        fresh = {
            "kind": values["kind"],
            "payload": values["payload"],
            "due_at": values["due_at"],
            "cron": values.get("cron"),
            "time_zone": values.get("time_zone"),
            "max_attempts": values["max_attempts"],
            "partner_id": values.get("partner_id"),
            "status": JobStatus.SCHEDULED,
            "attempts": 0,
            "last_error": None,
            "lease_owner": None,
            "lease_until": None,
            "finished_at": None,
            "updated_at": now,
        }
        statement = insert_(Job).values(id=new_id(), key=values["key"], created_at=now, **fresh)
        await self.session.execute(
            statement.on_conflict_do_update(index_elements=["key"], set_=fresh)
        )

    async def cancel(self, key: str) -> bool:
        """Forget a job that has not run yet (or is waiting to be retried)."""
        result = await self.session.execute(
            delete(Job).where(Job.key == key, Job.status == JobStatus.SCHEDULED)
        )
        return bool(getattr(result, "rowcount", 0))

    async def by_key(self, key: str) -> Job | None:
        result = await self.session.execute(select(Job).where(Job.key == key))
        return result.scalar_one_or_none()

    async def any_due(self, now: datetime, skip_kinds: Iterable[str] = ()) -> bool:
        """Whether ``claim`` would find something: a read, so that a worker polling an
        empty queue takes no write lock (SQLite has one, shared with the command path)."""
        found = await self.session.execute(_due(select(Job.id), now, skip_kinds).limit(1))
        return found.first() is not None

    async def claim(
        self,
        owner: str,
        now: datetime,
        lease: timedelta,
        limit: int,
        skip_kinds: Iterable[str] = (),
    ) -> Sequence[Job]:
        """Take up to ``limit`` due jobs for ``owner``: scheduled ones whose time has
        come, and running ones whose lease ran out (their worker died). On PostgreSQL
        concurrent claimers skip each other's rows (``FOR UPDATE SKIP LOCKED``); on
        SQLite the caller's write transaction (``BEGIN IMMEDIATE``) serialises them."""
        due = (
            _due(select(Job.id), now, skip_kinds)
            .order_by(Job.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list((await self.session.execute(due)).scalars())
        if not ids:
            return []
        await self.session.execute(
            update(Job)
            .where(Job.id.in_(ids))
            .values(
                status=JobStatus.RUNNING,
                lease_owner=owner,
                lease_until=now + lease,
                attempts=Job.attempts + 1,
                last_run_at=now,
                updated_at=now,
            )
        )
        result = await self.session.execute(
            select(Job)
            .where(Job.id.in_(ids))
            .order_by(Job.due_at)
            .execution_options(populate_existing=True)
        )
        return result.scalars().all()

    async def finish(self, job_id: UUID, owner: str, values: dict[str, Any]) -> bool:
        """Record how a run ended, if ``owner`` still holds the job; False if it lost
        it (its lease ran out and another worker took it, or it was rescheduled)."""
        result = await self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner, Job.status == JobStatus.RUNNING)
            .values(lease_until=None, **values)  # lease_owner stays: who ran it last
        )
        return bool(getattr(result, "rowcount", 0))

    async def finish_many(
        self, job_ids: Sequence[UUID], owner: str, values: dict[str, Any]
    ) -> bool:
        """``finish`` for several jobs that end alike, in one statement; False (and
        nothing should be kept) unless ``owner`` still held every one of them."""
        result = await self.session.execute(
            update(Job)
            .where(Job.id.in_(job_ids), Job.lease_owner == owner, Job.status == JobStatus.RUNNING)
            .values(lease_until=None, **values)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0) == len(job_ids)

    async def next_due(self, skip_kinds: Iterable[str] = ()) -> datetime | None:
        statement = select(func.min(Job.due_at)).where(Job.status == JobStatus.SCHEDULED)
        skipped = sorted(skip_kinds)
        if skipped:
            statement = statement.where(Job.kind.not_in(skipped))
        result = await self.session.execute(statement)
        value: datetime | None = result.scalar()
        return value

    async def listing(
        self, *, status: JobStatus | None, kind: str | None, after: UUID | None, limit: int
    ) -> Sequence[Job]:
        """Jobs in creation order (ids are time-ordered), by keyset."""
        statement = select(Job)
        if status is not None:
            statement = statement.where(Job.status == status)
        if kind is not None:
            statement = statement.where(Job.kind == kind)
        if after is not None:
            statement = statement.where(Job.id > after)
        result = await self.session.execute(statement.order_by(Job.id).limit(limit))
        return result.scalars().all()

    async def retry(self, job_id: UUID, now: datetime) -> bool:
        """Give a dead job another round of attempts, now."""
        result = await self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.DEAD)
            .values(
                status=JobStatus.SCHEDULED, attempts=0, due_at=now, finished_at=None, updated_at=now
            )
        )
        return bool(getattr(result, "rowcount", 0))

    async def get(self, job_id: UUID) -> Job | None:
        return await self.session.get(Job, job_id)

    async def finished_since(self, since: datetime) -> tuple[int, int]:
        """(jobs that died, jobs that ran) since then: for the failure-rate alert."""
        ran = await self.session.execute(
            select(func.count()).select_from(Job).where(Job.last_run_at >= since)
        )
        died = await self.session.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.status == JobStatus.DEAD, Job.updated_at >= since)
        )
        return int(died.scalar() or 0), int(ran.scalar() or 0)

    async def purge_finished(self, before: datetime) -> int:
        result = await self.session.execute(
            delete(Job).where(Job.status == JobStatus.SUCCEEDED, Job.finished_at < before)
        )
        return int(getattr(result, "rowcount", 0) or 0)


def _due(query: Any, now: datetime, skip_kinds: Iterable[str]) -> Any:
    """Jobs to run: scheduled ones whose time has come, and running ones whose lease ran
    out (their worker died), leaving out ``skip_kinds``."""
    query = query.where(
        or_(
            (Job.status == JobStatus.SCHEDULED) & (Job.due_at <= now),
            (Job.status == JobStatus.RUNNING) & (Job.lease_until < now),
        )
    )
    skipped = sorted(skip_kinds)
    return query.where(Job.kind.not_in(skipped)) if skipped else query
