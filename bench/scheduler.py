"""Durable jobs: 100,000 jobs due at once, drained by 1 and by 2 worker processes, on
PostgreSQL and on SQLite — jobs per second and lateness (start minus due time) p50/p99.

Each worker is a process of its own running ``sesame.jobs.service.Worker`` with the
default concurrency, claiming with leases exactly as ``sesame worker`` does; the jobs'
handler does nothing, so the figures are the scheduler's own cost (claim, run in a
transaction that records the end, commit). Every job must run exactly once: the run
checks that none is left and none ran twice.

Last line: one JSON object with ``pg_1w_jobs_per_s``, ``pg_2w_jobs_per_s``,
``pg_2w_lateness_p50_ms``, ``pg_2w_lateness_p99_ms``, ``sqlite_jobs_per_s`` (1 worker),
``sqlite_2w_jobs_per_s`` and the lateness of each.

Usage: ``python bench/scheduler.py [--jobs 100000]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import _create_pg_database, _drop_pg_database, percentile, record, spawn, step
from harness import run as run_bench
from sesame.jobs import service as jobs
from sesame.kit.ids import new_id
from sesame.kit.logging import configure_logging
from sesame.settings import Settings

SECRET = "bench-secret-key-with-at-least-32-characters!"


@jobs.handler("bench.noop")
async def noop(run: jobs.JobRun) -> None:
    """Nothing: the scheduler's own cost is what is measured."""


def settings_for(url: str) -> Settings:
    return Settings(
        env="development",
        database_url=url,
        secret_key=SECRET,
        gateway_enabled=False,
        log_level="warning",
        ledger_enabled=False,
    )  # type: ignore[call-arg]


async def fill(url: str, count: int) -> datetime:
    """``count`` jobs, all due now; returns their due time."""
    from sqlalchemy import insert

    from sesame.kit.db import write_intent
    from sesame.models import Job, JobStatus
    from sesame.runtime import build_runtime

    runtime = build_runtime(settings_for(url))
    due = datetime.now(UTC)
    try:
        for start in range(0, count, 5000):
            rows = [
                {
                    "id": new_id(),
                    "kind": "bench.noop",
                    "key": f"bench:{n}",
                    "payload": {},
                    "due_at": due,
                    "status": JobStatus.SCHEDULED,
                    "attempts": 0,
                    "max_attempts": 3,
                    "created_at": due,
                    "updated_at": due,
                }
                for n in range(start, min(count, start + 5000))
            ]
            with write_intent():
                async with runtime.session_factory() as session:
                    await session.execute(insert(Job), rows)
                    await session.commit()
    finally:
        await runtime.close()
    return due


async def work(url: str) -> dict[str, Any]:
    """One worker process: drain what is due, report what it ran and how late."""
    from sesame.runtime import build_runtime

    runtime = build_runtime(settings_for(url))
    lateness: dict[Any, float] = {}
    real = jobs.Worker.observe

    def timed(self: jobs.Worker, job: Any) -> None:
        lateness.setdefault(job.id, (datetime.now(UTC) - job.due_at).total_seconds())
        real(self, job)

    jobs.Worker.observe = timed  # type: ignore[method-assign]
    worker = jobs.Worker(runtime, concurrency=runtime.settings.job_concurrency)
    started = time.perf_counter()
    try:
        while await worker.run_due():
            pass
    finally:
        await runtime.close()
    return {
        "ran": worker.ran,
        "seconds": time.perf_counter() - started,
        "lateness": list(lateness.values()),
    }


async def check(url: str, count: int) -> None:
    from sqlalchemy import func, select

    from sesame.models import Job, JobStatus
    from sesame.runtime import build_runtime

    runtime = build_runtime(settings_for(url))
    try:
        async with runtime.read_session_factory() as session:
            rows = await session.execute(
                select(Job.status, Job.attempts, func.count()).group_by(Job.status, Job.attempts)
            )
            counts = {(str(s), a): n for s, a, n in rows.all()}
    finally:
        await runtime.close()
    assert counts == {(str(JobStatus.SUCCEEDED), 1): count}, counts


def run(database: str, workers: int, count: int) -> dict[str, float]:
    from sesame.migrations import upgrade

    directory = tempfile.mkdtemp(prefix="sesame-jobs-bench-")
    url = (
        f"sqlite+aiosqlite:///{directory}/jobs.db"
        if database == "sqlite"
        else asyncio.run(_create_pg_database())
    )
    try:
        upgrade(url)
        asyncio.run(fill(url, count))
        started = time.perf_counter()
        processes = [
            spawn([sys.executable, __file__, "--work", url], stdout=subprocess.PIPE, text=True)
            for _ in range(workers)
        ]
        reports = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in processes]
        elapsed = time.perf_counter() - started
        asyncio.run(check(url, count))
    finally:
        if database == "postgresql":
            asyncio.run(_drop_pg_database(url))
    ran = sum(r["ran"] for r in reports)
    assert ran == count, (ran, count)
    lateness = [x for r in reports for x in r["lateness"]]
    figures = {
        "jobs_per_s": count / elapsed,
        "lateness_p50_ms": percentile(lateness, 0.5) * 1000,
        "lateness_p99_ms": percentile(lateness, 0.99) * 1000,
    }
    print(
        f"{database}, {workers} worker{'s' if workers > 1 else ''}: {count:,} jobs in"
        f" {elapsed:.1f} s = {figures['jobs_per_s']:,.0f} jobs/s; lateness p50"
        f" {figures['lateness_p50_ms']:,.0f} ms, p99 {figures['lateness_p99_ms']:,.0f} ms"
        f" (per worker: {', '.join(str(r['ran']) for r in reports)})",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_logging("warning", "console", stream=sys.stderr)
    if args.work:
        print(json.dumps(asyncio.run(work(args.work))))
        return
    results = record()
    for database, short in (("postgresql", "pg"), ("sqlite", "sqlite")):
        for workers in (1, 2):
            step(f"{database}, {workers} worker{'s' if workers > 1 else ''}")
            figures = run(database, workers, args.jobs)
            prefix = f"{short}_{workers}w_"
            results.update({prefix + k: round(v, 1) for k, v in figures.items()})
    results["sqlite_jobs_per_s"] = results["sqlite_1w_jobs_per_s"]
    results["jobs"] = args.jobs
    print(json.dumps(results))


if __name__ == "__main__":
    run_bench(main)
