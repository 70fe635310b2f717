"""Two real ``sesame worker`` processes on one PostgreSQL database: every key's expiry
runs, and runs once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import select

from sesame.auth.sms import MemorySmsSender
from sesame.keys import schedule
from sesame.kit.db import write_intent
from sesame.kit.ids import new_id
from sesame.models import Job, JobStatus, Key, OutboxMessage
from sesame.runtime import Runtime, build_runtime
from tests.conftest import test_settings
from tests.support import served_world

KEYS = 200


async def keys_ending_soon(runtime: Runtime, seconds: float) -> list[UUID]:
    """A partner's world, then ``KEYS`` courier keys that end in ``seconds``."""
    async with served_world(runtime, "10.9.1.1") as (api, world):
        first = await api.create(
            "/v1/keys",
            world.tokens["partner_admin"],
            {
                "person_id": world.ids["person"],
                "kind": "courier",
                "carrier": "CJ Logistics",
                "building_id": world.ids["building"],
            },
        )
    ends = runtime.clock.now() + timedelta(seconds=seconds)
    with write_intent():
        async with runtime.session_factory() as session:
            template = await session.get(Key, UUID(first["id"]))
            assert template is not None
            columns = {c.key for c in Key.__table__.columns} - {"id", "ends_at"}
            keys = [
                Key(id=new_id(), ends_at=ends, **{c: getattr(template, c) for c in columns})
                for _ in range(KEYS)
            ]
            session.add_all(keys)
            await session.flush()
            await schedule.follow(session, runtime, keys)
            await session.commit()
    return [key.id for key in keys]


def start_worker(env: dict[str, str], directory: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sesame", "worker"],
        env=env,
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.timeout(240)  # two processes starting on a loaded machine
async def test_two_worker_processes_never_run_a_job_twice(
    postgres_database: str, tmp_path: Path
) -> None:
    # No worker and no ledger here: the two processes below do the work.
    runtime = build_runtime(
        test_settings(postgres_database, worker_enabled=False, ledger_enabled=False),
        sms_sender=MemorySmsSender(),
    )
    try:
        async with asyncio.timeout(60):
            key_ids = await keys_ending_soon(runtime, seconds=4)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SESAME_")},
            "SESAME_ENV": "development",
            "SESAME_DATABASE_URL": postgres_database,
            "SESAME_GATEWAY_ENABLED": "false",
            "SESAME_LOG_LEVEL": "warning",
            "SESAME_JOB_CONCURRENCY": "2",  # small claims (64), so that both take part
        }
        workers = [start_worker(env, tmp_path) for _ in range(2)]
        try:
            for _ in range(600):
                async with runtime.read_session_factory() as session:
                    rows = await session.execute(
                        select(Job.status, Job.lease_owner).where(Job.kind == "key.timing")
                    )
                    timing = rows.all()
                if len(timing) == KEYS and all(s is JobStatus.SUCCEEDED for s, _ in timing):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"jobs left: {Counter(s for s, _ in timing)}")
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                await asyncio.to_thread(worker.wait, 20)
        assert all(w.returncode in (0, -15) for w in workers)
        async with runtime.read_session_factory() as session:
            expired = Counter(
                (
                    await session.execute(
                        select(OutboxMessage.aggregate_id).where(
                            OutboxMessage.topic == "key.expired"
                        )
                    )
                ).scalars()
            )
            statuses = set(
                (await session.execute(select(Key.status).where(Key.id.in_(key_ids)))).scalars()
            )
        assert {expired[key_id] for key_id in key_ids} == {1}  # each expiry once
        assert {str(s) for s in statuses} == {"expired"}
        owners = Counter(owner.rsplit(":", 2)[1] for _, owner in timing)  # by process id
        assert len(owners) == 2, owners  # both processes took part
    finally:
        await runtime.close()
