"""The broker restarts: the gateway and every device come back, and nothing runs twice."""

from __future__ import annotations

import asyncio

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
