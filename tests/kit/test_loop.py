"""The background loop stops when cancelled, whenever the cancellation comes."""

from __future__ import annotations

import asyncio

import pytest

from sesame.kit.loop import keep_running, woken_within


@pytest.mark.parametrize("ticks", range(5))
async def test_a_loop_cancelled_as_it_is_woken_stops(ticks: int) -> None:
    """On Python 3.11, ``asyncio.wait_for`` returns instead of raising when the task is
    cancelled just after what it waits for is done; a loop built on it went on forever,
    and the shutdown that awaited it hung. Every interleaving of wake and cancel here."""
    wake = asyncio.Event()
    drained = asyncio.Event()

    async def drain() -> None:
        drained.set()

    task = asyncio.create_task(keep_running(drain, wake, name="test", poll_seconds=60))
    await asyncio.wait_for(drained.wait(), timeout=5)
    await asyncio.sleep(0)  # the loop now waits for its wake
    wake.set()
    for _ in range(ticks):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done == {task}, "the loop went on after it was cancelled"
    assert task.cancelled()


async def test_woken_within_tells_a_wake_from_a_timeout() -> None:
    event = asyncio.Event()
    assert await woken_within(event, 0.01) is False
    event.set()
    assert await woken_within(event, 5) is True
