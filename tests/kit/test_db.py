"""The write gate: SQLite writers of one process take turns, urgent ones first."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from sesame.kit.db import (
    WriteGate,
    create_engine,
    create_read_session_factory,
    write_intent,
)
from tests.support import eventually


async def test_urgent_writers_go_first_then_the_others_in_arrival_order() -> None:
    gate = WriteGate(patience=30)
    await gate.acquire(urgent=False)  # a background transaction is running
    order: list[str] = []

    async def writer(name: str, *, urgent: bool) -> None:
        await gate.acquire(urgent=urgent)
        order.append(name)
        gate.release()

    tasks = [
        asyncio.create_task(writer("ingest", urgent=False)),
        asyncio.create_task(writer("router", urgent=False)),
        asyncio.create_task(writer("open", urgent=True)),
        asyncio.create_task(writer("result", urgent=True)),
    ]
    await eventually(lambda: gate.waiting == 4)
    assert order == []  # nobody passes while it is held
    gate.release()
    await asyncio.gather(*tasks)
    assert order == ["open", "result", "ingest", "router"]


async def test_a_waiter_that_gives_up_passes_the_turn_on() -> None:
    gate = WriteGate(patience=30)
    await gate.acquire(urgent=False)
    quitter = asyncio.create_task(gate.acquire(urgent=True))
    patient = asyncio.create_task(gate.acquire(urgent=False))
    await eventually(lambda: gate.waiting == 2)
    quitter.cancel()
    gate.release()
    await asyncio.wait_for(patient, 5)  # the turn reached the next waiter
    assert quitter.cancelled()


async def test_a_gate_never_released_costs_its_patience_not_a_hang() -> None:
    gate = WriteGate(patience=0.05)
    await gate.acquire(urgent=False)  # held by a connection that never comes back
    await asyncio.wait_for(gate.acquire(urgent=True), 5)  # goes on to SQLite's own lock


async def test_a_writer_waiting_for_another_process_leaves_the_event_loop_free(
    tmp_path: Path,
) -> None:
    """SQLite statements run on the loop's thread; a write lock held elsewhere (another
    process: here another engine) is waited for between tries, never inside SQLite's
    busy handler, which would stop every other task of the process meanwhile."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    holder, waiter = create_engine(url, timeout_seconds=10), create_engine(url, timeout_seconds=10)
    try:
        async with holder.begin() as connection:
            await connection.execute(text("CREATE TABLE t (n INTEGER)"))
        ticks = 0
        stop = asyncio.Event()

        async def tick() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        with write_intent():
            held = await holder.connect()
            transaction = await held.begin()  # BEGIN IMMEDIATE: the write lock
            await held.execute(text("INSERT INTO t VALUES (1)"))

            async def write() -> None:
                with write_intent():
                    async with waiter.begin() as connection:
                        await connection.execute(text("INSERT INTO t VALUES (2)"))

            writing = asyncio.create_task(write())
            before = ticks
            await eventually(lambda: ticks >= before + 20)  # the loop runs while it waits
            assert not writing.done()  # and the writer is still waiting for the lock
            await transaction.commit()
            await held.close()
        await asyncio.wait_for(writing, 5)
        stop.set()
        await ticker
        async with waiter.connect() as connection:
            rows = (await connection.execute(text("SELECT n FROM t ORDER BY n"))).scalars().all()
        assert rows == [1, 2]
    finally:
        await holder.dispose()
        await waiter.dispose()


async def test_the_log_reaches_the_database_file_on_a_thread_not_in_a_commit(
    tmp_path: Path,
) -> None:
    """A commit on the loop's thread never runs SQLite's own checkpoint (megabytes and
    two syncs); a thread moves the log into the database file instead."""
    path = tmp_path / "logged.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}", timeout_seconds=10)
    try:
        async with engine.begin() as connection:
            assert (await connection.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar() == 0
            await connection.execute(text("CREATE TABLE t (n INTEGER, v TEXT)"))
        empty = path.stat().st_size
        for batch in range(5):
            async with engine.begin() as connection:
                await connection.execute(
                    text("INSERT INTO t VALUES (:n, :v)"),
                    [{"n": batch * 100 + i, "v": "x" * 500} for i in range(100)],
                )
        await eventually(lambda: path.stat().st_size > empty + 200_000)
    finally:
        await engine.dispose()


async def test_a_read_session_never_takes_the_write_lock(tmp_path: Path) -> None:
    """A read session opened inside ``write_intent`` (a POST's principal lookup) reads
    beside a writer that holds the lock, and a new read session sees what it committed."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'reads.db'}"
    engine = create_engine(url, timeout_seconds=10)
    readers = create_read_session_factory(engine)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (n INTEGER)"))
        with write_intent():
            writer = await engine.connect()
            transaction = await writer.begin()  # BEGIN IMMEDIATE: the write lock
            await writer.execute(text("INSERT INTO t VALUES (1)"))
            async with readers() as reader:  # no BEGIN IMMEDIATE: it would wait for the lock
                seen = await asyncio.wait_for(reader.execute(text("SELECT count(*) FROM t")), 2)
                assert seen.scalar() == 0
            await transaction.commit()
            await writer.close()
            async with readers() as reader:
                assert (await reader.execute(text("SELECT count(*) FROM t"))).scalar() == 1
    finally:
        await engine.dispose()
