"""Wiring the keys domain into the device side and the process's background work."""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta
from uuid import UUID

from sesame.keys import events, lifecycle, pins, trust
from sesame.keys.repository import PinCodeRepository
from sesame.kit.logging import get_logger
from sesame.runtime import Runtime

log = get_logger("sesame.keys")

BACKGROUND_SECONDS = 5.0


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


async def background(runtime: Runtime) -> None:
    """Statuses that follow time, and PIN codes that come due or end."""
    while True:
        await asyncio.sleep(BACKGROUND_SECONDS)
        try:
            await lifecycle.advance(runtime)
            if runtime.gateway is not None and runtime.gateway.connected:
                now = runtime.clock.now()
                async with runtime.read_session_factory() as session:
                    lead = now + timedelta(minutes=runtime.settings.pin_lead_minutes)
                    devices = await PinCodeRepository(session).needing_work(now, lead)
                for device_id in devices:
                    await pins.reconcile(runtime, device_id)
        except Exception as exc:
            log.warning("keys_background_failed", error_type=type(exc).__name__)
