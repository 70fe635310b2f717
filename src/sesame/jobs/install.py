"""Starting and stopping workers with a process."""

from __future__ import annotations

import asyncio
from contextlib import suppress

from sesame.jobs.service import run_workers
from sesame.runtime import Runtime


def start_workers(runtime: Runtime, count: int = 1) -> asyncio.Task[None]:
    return asyncio.create_task(run_workers(runtime, count))


async def stop_workers(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
