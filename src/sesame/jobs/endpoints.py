"""``/v1/jobs``: the durable jobs, for platform administrators."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from sesame.api.deps import AppRuntime, CurrentPrincipal, DbSession
from sesame.api.route import API_PREFIX, SesameRoute
from sesame.auth.principal import Principal
from sesame.jobs.repository import JobRepository
from sesame.jobs.schemas import JobRead
from sesame.kit.errors import Conflict, Forbidden, NotFound
from sesame.kit.pagination import (
    CURSOR_PATTERN,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Page,
    decode_cursor,
    encode_cursor,
)
from sesame.models import JobStatus

router = APIRouter(prefix=f"{API_PREFIX}/jobs", tags=["jobs"], route_class=SesameRoute)


def _platform_only(principal: Principal) -> None:
    if not principal.is_platform:
        raise Forbidden("jobs are for platform administrators")


@router.get("", response_model=Page[JobRead], operation_id="list_jobs")
async def list_jobs(
    principal: CurrentPrincipal,
    session: DbSession,
    status: JobStatus | None = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[JobRead]:
    """Jobs in creation order; `status=dead` lists those that gave up, with their error."""
    _platform_only(principal)
    after = decode_cursor(cursor) if cursor else None
    rows = await JobRepository(session).listing(
        status=status, kind=kind, after=after, limit=limit + 1
    )
    items = [JobRead.model_validate(row) for row in rows[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].id) if len(rows) > limit else None)


@router.get("/{job_id}", response_model=JobRead, operation_id="get_job")
async def get_job(job_id: UUID, principal: CurrentPrincipal, session: DbSession) -> JobRead:
    _platform_only(principal)
    job = await JobRepository(session).get(job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return JobRead.model_validate(job)


@router.post("/{job_id}/retry", response_model=JobRead, operation_id="retry_job")
async def retry_job(
    job_id: UUID, principal: CurrentPrincipal, session: DbSession, runtime: AppRuntime
) -> JobRead:
    """Run a dead job again, now, with a fresh round of attempts."""
    _platform_only(principal)
    repository = JobRepository(session)
    if await repository.get(job_id) is None:
        raise NotFound(f"job {job_id} not found")
    if not await repository.retry(job_id, runtime.clock.now()):
        raise Conflict("only a dead job can be retried")
    await session.flush()
    job = await repository.get(job_id)
    assert job is not None
    await session.refresh(job)
    return JobRead.model_validate(job)
