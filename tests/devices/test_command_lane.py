"""Commands before events: opens succeed while devices flood the gateway with events, and
the flood is stored in full once it is over (ingest pushes back; it loses nothing)."""

from __future__ import annotations

import asyncio

from sesame.simulators import SimulatedDevice
from tests.device_fixtures import Fleet
from tests.support import eventually

EVENTS_PER_BURST = 10
BURST_SECONDS = 0.01  # up to 1,000 events a second offered
OPENS = 15


async def flood(devices: list[SimulatedDevice], stop: asyncio.Event) -> int:
    """Emit events from every device in bursts until ``stop``; how many were emitted."""
    emitted = 0
    while not stop.is_set():
        for n in range(EVENTS_PER_BURST):
            devices[n % len(devices)].emit("door_opened")
        emitted += EVENTS_PER_BURST
        await asyncio.sleep(BURST_SECONDS)
    return emitted


async def test_every_open_succeeds_under_a_flood_of_events_and_no_event_is_lost(
    fleet: Fleet,
) -> None:
    _, reader = await fleet.run("entrance_reader")
    doorbells = [
        await fleet.start(fleet.simulator(await fleet.provision("doorbell", entrance=None)))
        for _ in range(4)
    ]
    stop = asyncio.Event()
    flooding = asyncio.create_task(flood(doorbells, stop))
    attempts = []
    try:
        await eventually(lambda: sum(len(d.pending_events) for d in doorbells) > 0)
        for _ in range(OPENS):
            response = await fleet.api.post(
                f"/v1/entrances/{fleet.world.ids['entrance']}/open",
                params={"wait": 5},
                token=fleet.world.tokens["site_manager"],
                json={"duration_s": 1},
            )
            assert response.status_code == 201, response.text
            attempts.append(response.json())
    finally:
        stop.set()
    emitted = await flooding
    assert [a["status"] for a in attempts] == ["success"] * OPENS
    assert [e.action for e in reader.executed] == ["open"] * OPENS  # each ran once
    assert emitted > OPENS * EVENTS_PER_BURST  # the opens ran during the flood

    # Whatever ingest could not take at once was resent by its device, and stored.
    def all_acknowledged() -> bool:
        return all(not d.pending_events for d in doorbells)

    await eventually(all_acknowledged, seconds=60)
    assert sum(len(d.acked_events) for d in doorbells) == emitted
