"""Scheduling jobs, and the worker that runs them.

A job is a row: a handler (``kind``), a unique ``key`` (scheduling the same key again
moves the one job instead of adding another), a payload and the time it is due. Domain
code schedules jobs in its own transaction (``schedule``), so a job exists exactly when
the change that wants it committed.

Workers — one inside every ``sesame serve`` by default, any number as ``sesame
worker`` — claim due jobs with a lease and run their handlers:

- **Exactly once.** A handler gets a session whose transaction also records the job's
  end, and only if the worker still holds its lease: what a handler writes through that
  session commits together with "done", or not at all. A worker that dies mid-run loses
  nothing; its lease runs out and another worker runs the job again, from scratch.
  Handlers that act outside the database (commands to devices) must be idempotent.
- **Catch-up.** A job is due from its time on, whenever a worker gets to it: a key
  activation missed while everything was down happens at start-up, an expiry at once.
  A recurring job missed several times runs once, then resumes at its next time.
- **Recurring jobs** follow a cron expression in a time zone (a site's), with
  ``cronsim``: a time skipped by a daylight-saving change runs at the change, a time
  that occurs twice runs once.
- **Failures** are retried with capped exponential backoff and jitter, up to the job's
  ``max_attempts``; then the job is *dead*, with its last error, for an administrator
  to see (``GET /v1/jobs?status=dead``) and retry.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from prometheus_client import Counter, Histogram
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from sesame.jobs.repository import JobRepository
from sesame.kit.db import commit, write_intent
from sesame.kit.errors import ValidationFailed
from sesame.kit.logging import get_logger
from sesame.kit.loop import woken_within
from sesame.kit.retry import backoff_delay
from sesame.models import Job, JobStatus
from sesame.runtime import Runtime

log = get_logger("sesame.jobs")

RUNS = Counter("sesame_jobs_total", "Job runs by kind and outcome", ["kind", "outcome"])
LATENESS = Histogram(
    "sesame_job_lateness_seconds",
    "How long after its due time a job started",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 3600),
)
SCHEDULED = "jobs_scheduled"


class LeaseLost(Exception):
    """The worker no longer holds the job: its run is rolled back."""


class RetryLater(Exception):
    """Raised by a handler whose job cannot be done yet (a lock is offline): retried with
    backoff like a failure, but logged as a wait."""


@dataclass
class JobRun:
    """What a handler gets: the job, the runtime, and a session in the transaction that
    will also record the job's end. ``again_at`` asks for another run (a one-off job
    that has more to do later, such as a key's expiry after its activation)."""

    job: Job
    runtime: Runtime
    session: AsyncSession
    again_at: datetime | None = None

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload


Handler = Callable[[JobRun], Awaitable[None]]
HANDLERS: dict[str, Handler] = {}
# Kinds whose handlers commit through sessions of their own (they call code that does):
# never batched with others, whose open transaction they would wait for.
OWN_TRANSACTIONS: set[str] = set()
# Kinds that talk to devices: claimed only by workers whose process runs the gateway.
NEEDS_DEVICES: set[str] = set()


def handler(
    kind: str, *, own_transactions: bool = False, needs_devices: bool = False
) -> Callable[[Handler], Handler]:
    """Register the function that runs jobs of ``kind``. ``own_transactions``: it writes
    through sessions of its own rather than ``run.session``, so it cannot share a
    transaction with other jobs (and must be idempotent). ``needs_devices``: it sends
    to devices, so only a process with the device gateway takes it."""

    def register(function: Handler) -> Handler:
        HANDLERS[kind] = function
        if own_transactions:
            OWN_TRANSACTIONS.add(kind)
        if needs_devices:
            NEEDS_DEVICES.add(kind)
        return function

    return register


def next_time(cron: str, zone: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``cron`` names, read in ``zone``; in
    UTC (a local time in a repeated hour never compares equal across zones)."""
    local = after.astimezone(ZoneInfo(zone)).replace(microsecond=0)
    try:
        return next(CronSim(cron, local)).astimezone(UTC)
    except (CronSimError, StopIteration) as exc:
        raise ValidationFailed(f"not a usable cron expression: {cron!r}") from exc


async def schedule(
    session: AsyncSession,
    runtime: Runtime,
    kind: str,
    *,
    key: str,
    due_at: datetime | None = None,
    payload: dict[str, Any] | None = None,
    cron: str | None = None,
    time_zone: str | None = None,
    partner_id: UUID | None = None,
    max_attempts: int | None = None,
) -> None:
    """Schedule (or move) the job ``key`` in the session's transaction: at ``due_at``,
    or, for a recurring job, at the next time ``cron`` names in ``time_zone``."""
    now = runtime.clock.now()
    if cron is not None:
        zone = time_zone or runtime.settings.default_time_zone
        due_at = due_at or next_time(cron, zone, now)
        time_zone = zone
    if due_at is None:
        raise ValueError("a job needs a due time or a cron expression")
    await JobRepository(session).upsert(
        {
            "kind": kind,
            "key": key,
            "payload": payload or {},
            "due_at": due_at,
            "cron": cron,
            "time_zone": time_zone,
            "partner_id": partner_id,
            "max_attempts": max_attempts or runtime.settings.job_max_attempts,
        },
        now,
    )
    session.sync_session.info[SCHEDULED] = True


async def cancel(session: AsyncSession, key: str) -> bool:
    return await JobRepository(session).cancel(key)


# Workers in this process wake when a transaction that scheduled jobs commits.
_wakers: list[asyncio.Event] = []


@event.listens_for(Session, "after_commit")
def _wake_workers(session: Session) -> None:
    if session.info.pop(SCHEDULED, None):
        for waker in _wakers:
            waker.set()


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, _previous: Any) -> None:
    session.info.pop(SCHEDULED, None)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


@dataclass
class Worker:
    """Claims and runs due jobs until cancelled. ``concurrency`` jobs at a time."""

    runtime: Runtime
    name: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )
    concurrency: int = 4
    poll_seconds: float = 1.0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    ran: int = 0

    async def run(self) -> None:
        _wakers.append(self._wake)
        failures = 0
        try:
            while True:
                try:
                    claimed = await self.run_due()
                    failures = 0
                except Exception as exc:  # the database is away: wait and retry
                    failures += 1
                    log.warning("jobs_claim_failed", error_type=type(exc).__name__)
                    claimed = 0
                if claimed:
                    continue
                delay = await self._idle_delay() if not failures else backoff(failures)
                await woken_within(self._wake, delay)
                self._wake.clear()
        finally:
            _wakers.remove(self._wake)

    def _skipped(self) -> set[str]:
        """Kinds this worker leaves to others: device work, without a gateway here."""
        return NEEDS_DEVICES if self.runtime.gateway is None else set()

    async def _idle_delay(self) -> float:
        """Until the next job is due, at most ``poll_seconds`` (other processes schedule
        jobs too, and their commits do not wake this one)."""
        try:
            async with self.runtime.read_session_factory() as session:
                due = await JobRepository(session).next_due(self._skipped())
        except Exception:
            return self.poll_seconds
        if due is None:
            return self.poll_seconds
        wait = (due - self.runtime.clock.now()).total_seconds()
        return min(self.poll_seconds, max(0.0, wait))

    async def run_due(self) -> int:
        """Claim what is due and run it; returns how many jobs were claimed."""
        settings = self.runtime.settings
        now = self.runtime.clock.now()
        async with self.runtime.read_session_factory() as reader:
            if not await JobRepository(reader).any_due(now, self._skipped()):
                return 0
        with write_intent():
            async with self.runtime.session_factory() as session:
                jobs = await JobRepository(session).claim(
                    self.name,
                    now,
                    timedelta(seconds=settings.job_lease_seconds),
                    limit=self.concurrency * 32,
                    skip_kinds=self._skipped(),
                )
                await session.commit()
                for job in jobs:
                    session.expunge(job)
        if not jobs:
            return 0
        # Claimed jobs run in chunks, each chunk in one transaction (one commit for many
        # jobs); chunks run concurrently on PostgreSQL. SQLite has one writer at a time,
        # so there one chunk takes all.
        lanes = self.concurrency if self.runtime.engine.dialect.name == "postgresql" else 1
        alone = [job for job in jobs if job.kind in OWN_TRANSACTIONS]
        shared = [job for job in jobs if job.kind not in OWN_TRANSACTIONS]
        size = max(1, -(-len(shared) // lanes))
        chunks = [shared[i : i + size] for i in range(0, len(shared), size)]
        chunks += [[job] for job in alone]
        gate = asyncio.Semaphore(lanes)

        async def run(chunk: Sequence[Job]) -> None:
            async with gate:
                await self._run_chunk(chunk)

        await asyncio.gather(*(run(chunk) for chunk in chunks))
        return len(jobs)

    async def _run_chunk(self, chunk: Sequence[Job]) -> None:
        """Run the jobs one after the other in one transaction that also records each
        one's end. If any fails (or lost its lease), the transaction is rolled back and
        each job is run again in a transaction of its own, so that one job's failure
        never undoes another's work."""
        runtime = self.runtime
        if len(chunk) > 1:
            try:
                with write_intent():
                    async with runtime.session_factory() as session:
                        await self._run_together(session, chunk)
                        await commit(session)
            except Exception as exc:  # one by one below, to find and record the failure
                log.debug("jobs_chunk_split", jobs=len(chunk), error_type=type(exc).__name__)
            else:
                self.ran += len(chunk)
                for job in chunk:
                    RUNS.labels(job.kind, "succeeded").inc()
                return
        for job in chunk:
            await self._execute(job)

    async def _run_together(self, session: AsyncSession, chunk: Sequence[Job]) -> None:
        """Run every handler in ``session``, then record the ends with one statement per
        kind of end (most one-off jobs end alike)."""
        ends: dict[tuple[Any, ...], list[UUID]] = {}
        now = self.runtime.clock.now()  # one end time: alike ends share one statement
        for job in chunk:
            run = await self._handle(session, job)
            values = self._after_success(job, run, now)
            ends.setdefault(tuple(sorted(values.items())), []).append(job.id)
        repository = JobRepository(session)
        for end, ids in ends.items():
            if not await repository.finish_many(ids, self.name, dict(end)):
                raise LeaseLost(f"{len(ids)} jobs")

    async def _handle(self, session: AsyncSession, job: Job) -> JobRun:
        self.observe(job)
        function = HANDLERS.get(job.kind)
        if function is None:
            raise LookupError(f"no handler for jobs of kind {job.kind!r}")
        run = JobRun(job, self.runtime, session)
        await function(run)
        return run

    def observe(self, job: Job) -> None:
        """Note how late the job starts (each attempt)."""
        LATENESS.observe(max(0.0, (self.runtime.clock.now() - job.due_at).total_seconds()))

    async def _run_in(self, session: AsyncSession, job: Job) -> None:
        """Run ``job``'s handler in ``session`` and record its end there."""
        run = await self._handle(session, job)
        if not await JobRepository(session).finish(
            job.id, self.name, self._after_success(job, run)
        ):
            raise LeaseLost(job.key)

    async def _execute(self, job: Job) -> None:
        """Run one job in a transaction of its own; record a failure in another."""
        try:
            with write_intent():
                async with self.runtime.session_factory() as session:
                    await self._run_in(session, job)
                    await commit(session)
        except LeaseLost:
            RUNS.labels(job.kind, "lost").inc()
            log.warning("job_lease_lost", job=job.key, kind=job.kind)
            return
        except Exception as exc:
            await self._failed(job, exc)
            return
        self.ran += 1
        RUNS.labels(job.kind, "succeeded").inc()

    def _after_success(self, job: Job, run: JobRun, now: datetime | None = None) -> dict[str, Any]:
        now = now or self.runtime.clock.now()
        if run.again_at is not None:
            return {
                "status": JobStatus.SCHEDULED,
                "due_at": run.again_at,
                "attempts": 0,
                "last_error": None,
                "updated_at": now,
            }
        if job.cron:
            return {
                "status": JobStatus.SCHEDULED,
                "due_at": next_time(job.cron, job.time_zone or "UTC", max(now, job.due_at)),
                "attempts": 0,
                "last_error": None,
                "updated_at": now,
            }
        return {"status": JobStatus.SUCCEEDED, "finished_at": now, "updated_at": now}

    async def _failed(self, job: Job, exc: Exception) -> None:
        now = self.runtime.clock.now()
        waiting = isinstance(exc, RetryLater)
        if job.attempts >= job.max_attempts and not waiting:  # waits never give up
            values: dict[str, Any] = {
                "status": JobStatus.DEAD,
                "last_error": _error_text(exc),
                "finished_at": now,
                "updated_at": now,
            }
            outcome = "dead"
        else:
            delay = backoff(job.attempts, self.runtime.settings.job_retry_cap_seconds)
            values = {
                "status": JobStatus.SCHEDULED,
                "due_at": now + timedelta(seconds=delay),
                "last_error": _error_text(exc),
                "updated_at": now,
            }
            outcome = "waiting" if waiting else "retried"
        try:
            with write_intent():
                async with self.runtime.session_factory() as session:
                    await JobRepository(session).finish(job.id, self.name, values)
                    await session.commit()
        except Exception as second:  # the lease runs out; another worker retries it
            log.warning("job_failure_unrecorded", job=job.key, error_type=type(second).__name__)
        RUNS.labels(job.kind, outcome).inc()
        level = log.info if waiting else (log.error if outcome == "dead" else log.warning)
        level(
            "job_" + outcome,
            job=job.key,
            kind=job.kind,
            attempt=job.attempts,
            error=_error_text(exc)[:300],
        )


def backoff(attempt: int, cap: float = 3600.0) -> float:
    """Seconds before retry ``attempt`` (1, 2, …): 1 s doubling, capped, full jitter."""
    return 0.2 + backoff_delay(attempt, base=1.0, cap=cap)


async def run_workers(runtime: Runtime, count: int = 1) -> None:
    """``count`` workers in this process, until cancelled."""
    workers = [Worker(runtime, concurrency=runtime.settings.job_concurrency) for _ in range(count)]
    started = time.monotonic()
    log.info("workers_started", count=count)
    try:
        await asyncio.gather(*(w.run() for w in workers))
    finally:
        log.info(
            "workers_stopped",
            ran=sum(w.ran for w in workers),
            seconds=round(time.monotonic() - started, 1),
        )
