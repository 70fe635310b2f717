"""Durable jobs with a controllable clock: due times, recurrence across daylight-saving
changes, restarts, retries and dead letters, lost leases, and exactly one run.

Each test gets a database of its own and drives workers step by step (``run_due``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from sesame.jobs import service as jobs
from sesame.jobs.repository import JobRepository
from sesame.kit.clock import FrozenClock
from sesame.kit.db import write_intent
from sesame.migrations import upgrade
from sesame.models import Job, JobStatus, OutboxMessage
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime, build_runtime
from tests.conftest import BACKENDS, drop_postgres_database, fresh_database, test_settings

RUNS: list[tuple[str, datetime]] = []


@jobs.handler("test.record")
async def record(run: jobs.JobRun) -> None:
    """Leaves a trace in the job's own transaction (an outbox message) and in memory."""
    RUNS.append((run.job.key, run.runtime.clock.now()))
    await outbox.append(
        run.session, [outbox.message("test.ran", partner_id=None, aggregate_id=run.job.id)]
    )
    if run.payload.get("fail_times", 0) >= run.job.attempts:
        raise RuntimeError(f"failure number {run.job.attempts}")


@pytest.fixture(params=BACKENDS)
async def rt(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runtime]:
    """A runtime on a database of its own, with a clock that moves only when told."""
    url = await fresh_database(request.param, tmp_path)
    await asyncio.to_thread(upgrade, url)
    clock = FrozenClock(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
    runtime = build_runtime(
        test_settings(url, job_max_attempts=3, job_lease_seconds=30), clock=clock
    )
    RUNS.clear()
    yield runtime
    await runtime.close()
    if request.param == "postgresql":
        await drop_postgres_database(url)


def clock_of(rt: Runtime) -> FrozenClock:
    assert isinstance(rt.clock, FrozenClock)
    return rt.clock


def set_time(rt: Runtime, moment: datetime) -> None:
    clock_of(rt).set(moment)


async def schedule(rt: Runtime, key: str, **options: Any) -> None:
    with write_intent():
        async with rt.session_factory() as session:
            await jobs.schedule(session, rt, "test.record", key=key, **options)
            await session.commit()


async def job(rt: Runtime, key: str) -> Job:
    async with rt.read_session_factory() as session:
        found = await JobRepository(session).by_key(key)
    assert found is not None
    return found


async def trace_count(rt: Runtime) -> int:
    async with rt.read_session_factory() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.topic == "test.ran")
            )
            or 0
        )


async def test_a_job_runs_once_when_due_and_not_before(rt: Runtime) -> None:
    start = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    set_time(rt, start)
    await schedule(rt, "one", due_at=start + timedelta(minutes=5))
    worker = jobs.Worker(rt)
    assert await worker.run_due() == 0
    set_time(rt, start + timedelta(minutes=5))
    assert await worker.run_due() == 1
    assert await worker.run_due() == 0
    assert [("one", start + timedelta(minutes=5))] == RUNS
    done = await job(rt, "one")
    assert done.status is JobStatus.SUCCEEDED
    assert done.finished_at == start + timedelta(minutes=5)

    # Scheduling the same key again moves the one job; it does not add another.
    await schedule(rt, "one", due_at=start + timedelta(hours=1))
    await schedule(rt, "one", due_at=start + timedelta(hours=2))
    async with rt.read_session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 1
    assert (await job(rt, "one")).due_at == start + timedelta(hours=2)


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        # 09:00 in New York: 13:00Z on 30 and 31 October (summer time), 14:00Z from
        # 1 November, when it ends.
        ("America/New_York", ["13:00", "13:00", "14:00", "14:00"]),
        # Seoul has no daylight saving: always 00:00Z.
        ("Asia/Seoul", ["00:00", "00:00", "00:00", "00:00"]),
    ],
)
async def test_recurring_jobs_follow_local_time_across_dst(
    rt: Runtime, zone: str, expected: list[str]
) -> None:
    set_time(rt, datetime(2026, 10, 29, 15, 0, tzinfo=UTC))
    await schedule(rt, "daily", cron="0 9 * * *", time_zone=zone)
    worker = jobs.Worker(rt)
    for _ in range(4):
        due = (await job(rt, "daily")).due_at
        set_time(rt, due)
        assert await worker.run_due() == 1
    assert [moment.strftime("%H:%M") for _, moment in RUNS] == expected
    days = [moment.date() for _, moment in RUNS]
    assert len(set(days)) == 4  # one run a day, none doubled or skipped


async def test_skipped_and_repeated_local_times(rt: Runtime) -> None:
    """02:30 does not exist on 8 March 2026 in New York (it runs at 03:00); 01:30 happens
    twice on 1 November (it runs once)."""
    ny = "America/New_York"
    spring = jobs.next_time("30 2 * * *", ny, datetime(2026, 3, 8, 5, 0, tzinfo=UTC))
    assert spring == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT
    first = jobs.next_time("30 1 * * *", ny, datetime(2026, 11, 1, 4, 0, tzinfo=UTC))
    assert first == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    after = jobs.next_time("30 1 * * *", ny, first)
    assert after == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)  # not 01:30 EST the same night


async def test_a_restart_mid_schedule_runs_a_missed_job_once_then_resumes(
    rt: Runtime,
) -> None:
    set_time(rt, datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
    await schedule(rt, "hourly", cron="0 * * * *", time_zone="UTC")
    assert await jobs.Worker(rt).run_due() == 0
    set_time(rt, datetime(2026, 6, 1, 9, 0, tzinfo=UTC))
    assert await jobs.Worker(rt).run_due() == 1
    # Down from 09:00 to 12:20: three runs missed. A new process runs it once, now.
    set_time(rt, datetime(2026, 6, 1, 12, 20, tzinfo=UTC))
    restarted = jobs.Worker(rt)
    assert await restarted.run_due() == 1
    assert await restarted.run_due() == 0
    assert len(RUNS) == 2
    assert (await job(rt, "hourly")).due_at == datetime(2026, 6, 1, 13, 0, tzinfo=UTC)


async def test_failures_back_off_then_the_job_is_dead_with_its_reason(rt: Runtime) -> None:
    now = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    set_time(rt, now)
    await schedule(rt, "flaky", due_at=now, payload={"fail_times": 1})
    await schedule(rt, "broken", due_at=now, payload={"fail_times": 99})
    worker = jobs.Worker(rt)
    assert await worker.run_due() == 2
    flaky = await job(rt, "flaky")
    assert flaky.status is JobStatus.SCHEDULED
    assert flaky.due_at > now  # backed off
    assert flaky.last_error == "RuntimeError: failure number 1"
    for _ in range(5):
        set_time(rt, clock_of(rt).now() + timedelta(hours=2))
        await worker.run_due()
    assert (await job(rt, "flaky")).status is JobStatus.SUCCEEDED
    dead = await job(rt, "broken")
    assert dead.status is JobStatus.DEAD
    assert dead.attempts == 3
    assert dead.last_error == "RuntimeError: failure number 3"
    # A failed attempt's writes are rolled back with it: one trace per successful run.
    assert await trace_count(rt) == 1


async def test_a_lost_lease_loses_the_run_and_another_worker_runs_it(rt: Runtime) -> None:
    now = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    set_time(rt, now)
    await schedule(rt, "slow", due_at=now)
    with write_intent():  # a worker claims it and dies
        async with rt.session_factory() as session:
            claimed = await JobRepository(session).claim(
                "dead-worker", now, timedelta(seconds=30), 10
            )
            await session.commit()
    assert [j.key for j in claimed] == ["slow"]
    worker = jobs.Worker(rt)
    assert await worker.run_due() == 0  # still leased
    set_time(rt, now + timedelta(seconds=31))
    assert await worker.run_due() == 1
    assert (await job(rt, "slow")).status is JobStatus.SUCCEEDED
    # The dead worker's late finish does not count.
    with write_intent():
        async with rt.session_factory() as session:
            assert not await JobRepository(session).finish(
                claimed[0].id, "dead-worker", {"status": JobStatus.SUCCEEDED}
            )
            await session.commit()
    assert await trace_count(rt) == 1


async def test_concurrent_workers_run_each_job_once(rt: Runtime) -> None:
    now = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    set_time(rt, now)
    with write_intent():
        async with rt.session_factory() as session:
            for n in range(60):
                await jobs.schedule(session, rt, "test.record", key=f"j{n}", due_at=now)
            await session.commit()
    others = [build_runtime(rt.settings, clock=rt.clock) for _ in range(2)]
    try:
        workers = [jobs.Worker(r, concurrency=3) for r in [rt, *others]]

        async def drain(worker: jobs.Worker) -> None:
            while await worker.run_due():
                pass

        await asyncio.gather(*(drain(w) for w in workers))
    finally:
        for other in others:
            await other.close()
    assert sorted(key for key, _ in RUNS) == sorted(f"j{n}" for n in range(60))
    assert await trace_count(rt) == 60


async def test_unknown_kinds_and_bad_cron_are_refused_clearly(rt: Runtime) -> None:
    from sesame.kit.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match="cron"):
        await schedule(rt, "bad", cron="61 * * * *")
    now = clock_of(rt).now()
    with write_intent():
        async with rt.session_factory() as session:
            await jobs.schedule(
                session, rt, "no.such.kind", key="orphan", due_at=now, max_attempts=1
            )
            await session.commit()
    await jobs.Worker(rt).run_due()
    orphan = await job(rt, "orphan")
    assert orphan.status is JobStatus.DEAD
    assert "no handler for jobs of kind 'no.such.kind'" in (orphan.last_error or "")
    assert uuid.UUID(str(orphan.id))
