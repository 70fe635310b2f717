"""Commands before events: opens succeed while devices flood the gateway with events, and
the flood is stored in full once it is over (ingest pushes back; it loses nothing)."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

from prometheus_client import REGISTRY

from sesame.devices import protocol
from sesame.devices.broker import CONTROL_DISCONNECT, URGENT_RUN, _LanedQueue
from sesame.devices.ingest import EventIngestor
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


async def test_ingest_sheds_what_its_queue_cannot_hold_and_absorbs_resends_of_queued_events(
    fleet: Fleet,
) -> None:
    """The overflow is the devices' own resend: a shed event is not acknowledged (so it is
    sent again and then stored), and a resend of an event still queued costs nothing."""
    device = await fleet.provision("doorbell", entrance=None)
    device_id = UUID(device["id"])
    acked: list[UUID] = []

    async def publish(topic: str, payload: bytes, qos: int) -> None:
        acked.extend(protocol.EventsAck.model_validate_json(payload).event_ids)

    ingestor = EventIngestor(fleet.runtime, publish, max_queue=2)
    clock = fleet.runtime.clock
    first, second, third = (
        protocol.DeviceEvent(event_id=uuid4(), type="door_opened", occurred_at=clock.now())
        for _ in range(3)
    )
    shed_before = REGISTRY.get_sample_value("sesame_device_events_shed_total") or 0
    await ingestor.submit(device_id, first)
    await ingestor.submit(device_id, first)  # resent while still queued
    await ingestor.submit(device_id, second)
    await ingestor.submit(device_id, third)  # the queue is full: shed
    assert REGISTRY.get_sample_value("sesame_device_events_shed_total") == shed_before + 1
    assert ingestor.resends_absorbed == 1
    ingestor.start()
    try:
        await eventually(lambda: len(acked) == 2)
        assert set(acked) == {first.event_id, second.event_id}
        assert ingestor.stored == 2
        await ingestor.submit(device_id, third)  # the device sends it again: now taken
        await eventually(lambda: third.event_id in acked)
        assert ingestor.stored == 3
    finally:
        await ingestor.stop()


async def test_the_embedded_broker_fans_out_commands_results_and_presence_before_events() -> None:
    """amqtt fans messages out from one queue: here, what a waiting open needs goes ahead
    of every event queued before it, and each lane keeps its order."""
    queue = _LanedQueue()
    device = uuid4()
    for n in range(3):
        await queue.put({"topic": protocol.topic(device, protocol.Channel.EVENTS), "data": n})
    await queue.put({"topic": protocol.topic(device, protocol.Channel.STATE), "data": 3})
    for n, channel in enumerate(
        (protocol.Channel.RESULTS, protocol.Channel.HEARTBEAT, protocol.Channel.COMMANDS), 4
    ):
        await queue.put({"topic": protocol.topic(device, channel), "data": n})
    await queue.put({"topic": CONTROL_DISCONNECT, "data": 7})
    assert queue.qsize() == 8
    taken = [(await queue.get())["data"] for _ in range(8)]
    assert taken == [4, 5, 6, 7, 0, 1, 2, 3]
    assert queue.empty()


async def test_a_stream_of_urgent_messages_delays_events_but_never_stops_them() -> None:
    queue = _LanedQueue()
    device = uuid4()
    for n in range(2):
        await queue.put({"topic": protocol.topic(device, protocol.Channel.EVENTS), "data": n})
    for n in range(2 * URGENT_RUN + 4):
        await queue.put({"topic": protocol.topic(device, protocol.Channel.HEARTBEAT), "data": n})
    taken = [(await queue.get())["topic"].endswith("/events") for _ in range(queue.qsize())]
    assert [n for n, event in enumerate(taken) if event] == [URGENT_RUN, 2 * URGENT_RUN + 1]
