"""The write gate: SQLite writers of one process take turns, urgent ones first."""

from __future__ import annotations

import asyncio

from sesame.kit.db import WriteGate
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
