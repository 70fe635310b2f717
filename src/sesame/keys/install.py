"""Wiring the keys domain into the device side and the durable jobs."""

from __future__ import annotations

import functools
from uuid import UUID

from sesame.keys import events, pins, timing, trust  # timing: the job handlers
from sesame.kit.db import write_intent
from sesame.runtime import Runtime


def install(runtime: Runtime) -> None:
    """Register the keys' device hooks, once per runtime."""
    hooks = runtime.device_hooks
    if "keys" in hooks.installed:
        return
    hooks.attempt_finished.append(functools.partial(pins.on_attempt_finished, runtime))
    hooks.events.append(events.on_events)

    async def online(device_id: UUID) -> None:
        await trust.on_device_online(runtime, device_id)

    hooks.online.append(online)
    hooks.installed.add("keys")


async def install_jobs(runtime: Runtime) -> None:
    """Register the keys' job handlers and schedule their recurring sweeps (once)."""
    with write_intent():
        async with runtime.session_factory() as session:
            await timing.install_recurring(session, runtime)
            await session.commit()
