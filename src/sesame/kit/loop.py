"""A background loop that must never die: it works while there is work, then waits to be
woken (or polls), and backs off with jitter while its work keeps failing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sesame.kit.logging import get_logger
from sesame.kit.retry import backoff_delay

log = get_logger("sesame.loop")


async def woken_within(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set (True) or ``seconds`` pass (False).

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives just
    as the event is set, and a loop built on it then never stops (a shutdown that awaits
    it hangs). ``asyncio.timeout`` lets the cancellation through.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def keep_running(
    drain: Callable[[], Awaitable[None]],
    wake: asyncio.Event,
    *,
    name: str,
    poll_seconds: float = 1.0,
    settle_seconds: float = 0.02,
) -> None:
    """Call ``drain`` (which does all there is to do), then wait for ``wake`` or
    ``poll_seconds``; after failures, wait 0.1 s plus a jittered backoff instead.

    Woken, it lets ``settle_seconds`` pass before draining: the commits of one burst (an
    open's request and its result, an event batch) then make one step of background
    work, after the burst, instead of one step each in the middle of it."""
    failures = 0
    while True:
        try:
            await drain()
            failures = 0
        except Exception as exc:
            failures += 1
            log.warning(
                "background_step_failed",
                loop=name,
                error_type=type(exc).__name__,
                error=str(exc)[:300],
            )
        delay = 0.1 + backoff_delay(failures, base=0.5, cap=30.0) if failures else poll_seconds
        if await woken_within(wake, delay) and not failures:
            await asyncio.sleep(settle_seconds)
        wake.clear()
