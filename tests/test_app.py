"""The application's life cycle: how it stops."""

from __future__ import annotations

import asyncio

from sesame.app import _stop_within


async def test_a_stuck_closing_step_is_cancelled_and_the_later_ones_still_run() -> None:
    """A step that never ends is cancelled when the budget is spent, and the steps after
    it (the gateway, the broker) are still run."""
    ran: list[str] = []
    stuck_was_cancelled = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stuck_was_cancelled.set()
            raise

    async def broken() -> None:
        raise RuntimeError("a peer went away")

    async def devices() -> None:
        await asyncio.sleep(0.05)  # closing takes a round trip or two
        ran.append("devices")

    await asyncio.wait_for(
        _stop_within(0.2, [("stuck", stuck), ("broken", broken), ("devices", devices)]),
        timeout=30,
    )
    await asyncio.wait_for(stuck_was_cancelled.wait(), timeout=30)
    assert ran == ["devices"]
