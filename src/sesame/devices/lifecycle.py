"""Starting and stopping the device side of a Sesame process: broker and gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sesame.devices.broker import EmbeddedBroker
from sesame.devices.gateway import Gateway
from sesame.devices.service import credential_check, sync_mosquitto
from sesame.kit.logging import get_logger
from sesame.runtime import Runtime

log = get_logger("sesame.devices")


def embedded_broker(runtime: Runtime) -> EmbeddedBroker:
    return EmbeddedBroker(
        runtime.settings.mqtt_bind,
        credential_check(runtime),
        max_packet_bytes=runtime.settings.mqtt_max_packet_bytes,
    )


async def start_devices(runtime: Runtime) -> None:
    """The embedded broker when no external one is configured, then the gateway."""
    settings = runtime.settings
    if not settings.gateway_enabled:
        return
    if settings.mqtt_url is None:
        runtime.broker = embedded_broker(runtime)
        await runtime.broker.start()
    else:
        await sync_mosquitto(runtime)
    gateway = Gateway(
        runtime,
        url=settings.broker_url,
        password=runtime.keys.mqtt_gateway_password,
        heartbeat_timeout_seconds=settings.device_heartbeat_timeout_seconds,
    )
    await gateway.start()
    runtime.gateway = gateway
    if settings.simulate_devices_file:
        await _start_simulators(runtime, Path(settings.simulate_devices_file))


async def _start_simulators(runtime: Runtime, path: Path) -> None:
    from sesame.simulators import load_fleet, start_fleet

    if not await asyncio.to_thread(path.exists):
        log.warning("simulated_devices_missing", file=str(path))
        return
    fleet = load_fleet(path)
    await start_fleet(fleet)
    runtime.simulators = fleet
    log.info("simulated_devices_started", count=len(fleet))


async def stop_devices(runtime: Runtime) -> None:
    for simulated in runtime.simulators or []:
        await simulated.stop()
    runtime.simulators = None
    if runtime.gateway is not None:
        await runtime.gateway.stop()
        runtime.gateway = None
    if runtime.broker is not None:
        await runtime.broker.stop()
        runtime.broker = None
