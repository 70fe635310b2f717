"""The broker restarts: the gateway and every device come back, and nothing runs twice."""

from __future__ import annotations

import asyncio

from sesame.devices.broker import _SesameBroker
from sesame.devices.lifecycle import embedded_broker
from tests.device_fixtures import Fleet


async def restart_broker(fleet: Fleet, broker_kind: str) -> None:
    runtime = fleet.runtime
    if broker_kind == "embedded":
        await runtime.broker.stop()
        await asyncio.sleep(0.5)
        runtime.broker = embedded_broker(runtime)
        await runtime.broker.start()
    else:
        mosquitto = runtime.test_mosquitto  # type: ignore[attr-defined]
        await asyncio.to_thread(mosquitto.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(mosquitto.start)


async def test_everything_reconnects_after_a_broker_restart(fleet: Fleet, broker_kind: str) -> None:
    token = fleet.world.tokens["partner_admin"]
    running = [
        await fleet.run("entrance_reader"),
        await fleet.run("door_lock"),
        await fleet.run("doorbell"),
    ]
    for device, _ in running:
        action = "unlock" if device["kind"] == "door_lock" else "open"
        done = await fleet.api.post(
            f"/v1/devices/{device['id']}/commands",
            params={"wait": 5},
            token=token,
            json={"action": action},
        )
        assert done.json()["status"] == "success"

    await restart_broker(fleet, broker_kind)

    gateway = fleet.runtime.gateway
    for _ in range(200):
        if gateway.connected and all(sim.connected.is_set() for _, sim in running):
            break
        await asyncio.sleep(0.05)
    assert gateway.connected
    assert all(sim.connected.is_set() for _, sim in running)

    for device, sim in running:
        await fleet.wait_for(lambda d: d["online"], device["id"])
        action = "lock" if device["kind"] == "door_lock" else "open"
        after = await fleet.api.post(
            f"/v1/devices/{device['id']}/commands",
            params={"wait": 8},
            token=token,
            json={"action": action},
        )
        assert after.json()["status"] == "success", after.json()
        # Each command ran exactly once, the ones from before the restart included.
        assert len(sim.executed) == 2
        assert len({e.command_id for e in sim.executed}) == 2
    event = running[2][1].ring()
    for _ in range(100):
        if event.event_id in running[2][1].acked_events:
            break
        await asyncio.sleep(0.05)
    assert event.event_id in running[2][1].acked_events


class SwallowingHandler:
    """An amqtt handler whose reader, like amqtt's on Python 3.11, loses the first
    cancellation meant to stop it (it came as a packet arrived) and reads on."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()
        self.cancellations = 0
        self._reader_task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                try:
                    await asyncio.Event().wait()  # the next packet
                except asyncio.CancelledError:
                    self.cancellations += 1
                    if self.cancellations == 1:
                        continue  # swallowed
                    raise
        finally:
            self.stopped.set()

    async def stop(self) -> None:
        self._reader_task.cancel()
        await self.stopped.wait()


async def test_stopping_a_connection_whose_reader_swallowed_the_cancellation_ends() -> None:
    handler = SwallowingHandler()
    await asyncio.sleep(0)
    await asyncio.wait_for(_SesameBroker._stop_handler(None, handler), timeout=10)  # type: ignore[arg-type]
    assert handler.stopped.is_set()
    assert handler.cancellations == 2
