"""Presence from last will and heartbeats, health as data, and exactly-once events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from sesame.devices import health, protocol
from sesame.devices.ingest import Arrival, EventIngestor
from sesame.devices.repository import DeviceRepository
from sesame.models import Device, DeviceEventRecord, OutboxMessage
from sesame.outbox import repository as outbox
from sesame.simulators import Faults, SimulatedDevice
from tests.device_fixtures import HEARTBEAT_TIMEOUT, Fleet
from tests.support import ShiftableClock, eventually


def codes(issues: list[dict[str, object]]) -> list[object]:
    return [issue["code"] for issue in issues]


async def test_a_crash_is_announced_by_the_last_will(fleet: Fleet) -> None:
    device, sim = await fleet.run("entrance_reader")
    assert (await fleet.read(device["id"]))["errors"] == []
    await sim.crash()
    offline = await fleet.wait_for(lambda d: not d["online"], device["id"])
    assert codes(offline["errors"]) == ["device_offline"]
    assert offline["errors"][0]["created_at"]
    await fleet.start(fleet.simulator(device))
    back = await fleet.read(device["id"])
    assert back["online"] is True
    assert back["errors"] == []


async def test_the_last_will_of_an_earlier_boot_changes_nothing(fleet: Fleet) -> None:
    """A will the broker delivers after the device came back with a new boot (its old
    session taken over, or the will sent late) is about a connection already replaced."""
    device, sim = await fleet.run("entrance_reader")
    device_id = uuid.UUID(device["id"])
    connected = (await fleet.read(device["id"]))["connected_at"]
    sim._publish(  # what the broker publishes for the earlier boot, on the same topic
        protocol.Channel.STATUS, protocol.Presence(online=False, boot_id="an-earlier-boot")
    )
    sim.boot_id = "the-next-boot"  # then a message handled after it: a reconnection
    sim._publish(
        protocol.Channel.STATUS, protocol.Presence(online=True, boot_id=sim.boot_id), retain=True
    )
    after = await fleet.wait_for(lambda d: d["connected_at"] != connected, device["id"])
    assert after["online"] is True
    assert after["errors"] == []
    async with fleet.runtime.read_session_factory() as session:
        offline = await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.topic == "device.offline", OutboxMessage.aggregate_id == device_id)
        )
    assert offline == 0


async def test_a_silent_device_goes_offline_after_the_heartbeat_timeout(fleet: Fleet) -> None:
    device, _sim = await fleet.run("door_lock", heartbeat_interval=60)
    offline = await fleet.wait_for(
        lambda d: not d["online"], device["id"], seconds=HEARTBEAT_TIMEOUT + 5
    )
    assert codes(offline["errors"]) == ["device_offline"]
    assert "no heartbeat" in offline["errors"][0]["message"]


async def test_a_device_heard_while_that_is_being_written_is_not_swept_offline(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep reads ``last_seen_at`` from the database. A device heard from whose
    write is still waiting (behind others, under load) has not reached it yet: it is
    heard all the same, and stays online."""
    device, sim = await fleet.run("door_lock", heartbeat_interval=60)
    device_id = uuid.UUID(device["id"])
    gateway = fleet.runtime.gateway
    assert gateway is not None
    writing, release = asyncio.Event(), asyncio.Event()
    touch = DeviceRepository.touch

    async def waiting_touch(
        self: DeviceRepository, ids: Sequence[uuid.UUID], when: datetime
    ) -> None:
        if device_id in ids:
            writing.set()
            await release.wait()
        await touch(self, ids, when)

    monkeypatch.setattr(DeviceRepository, "touch", waiting_touch)
    clock = fleet.runtime.clock
    assert isinstance(clock, ShiftableClock)
    before = clock.now()
    event = sim.emit("door_opened")  # stored, so heard: the next flush writes it
    await eventually(lambda: event.event_id in sim.acked_events)
    await asyncio.wait_for(writing.wait(), timeout=10)
    clock.advance(timedelta(seconds=HEARTBEAT_TIMEOUT + 1))  # the database says: silent
    try:
        await gateway._sweep()
        assert (await fleet.read(device["id"]))["online"] is True
    finally:
        release.set()
    await fleet.wait_for(  # and then the write lands
        lambda d: datetime.fromisoformat(d["last_seen_at"]) >= before, device["id"]
    )


async def test_reported_state_and_low_battery_warning(fleet: Fleet) -> None:
    device, sim = await fleet.run("door_lock", battery_pct=12)
    seen = await fleet.wait_for(
        lambda d: d["reported_state"].get("battery_pct") == 12, device["id"]
    )
    assert seen["firmware"] == "sim-1.0"
    assert seen["reported_state"]["bolt"] == "locked"
    assert codes(seen["warnings"]) == ["low_battery"]
    sim.battery_pct = 80
    sim.publish_state()
    recovered = await fleet.wait_for(
        lambda d: d["reported_state"]["battery_pct"] == 80, device["id"]
    )
    assert recovered["warnings"] == []


async def test_repeated_disconnections_raise_a_flaky_connection_warning(fleet: Fleet) -> None:
    device, sim = await fleet.run("entrance_reader")
    assert (await fleet.read(device["id"]))["warnings"] == []
    for _ in range(3):
        await sim.crash()
        await asyncio.sleep(0.3)
        sim = await fleet.start(fleet.simulator(device), online=False)
    flaky = await fleet.wait_for(lambda d: "flaky_connection" in codes(d["warnings"]), device["id"])
    assert flaky["warnings"][0]["message"].startswith("3 disconnections")


def test_a_restart_the_broker_missed_counts_as_a_disconnection() -> None:
    """A device that comes back with a new boot before the broker noticed the old
    connection was gone (a session take-over, no last will) still went away."""
    device = Device(online=False, recent_disconnects=[], warnings={}, errors={})
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert health.went_online(device, now, "boot-0")
    assert not health.went_online(device, now, "boot-0")  # the same boot again: nothing
    for n in range(1, 4):
        assert not health.went_online(device, now + timedelta(seconds=n), f"boot-{n}")
    assert device.online
    assert len(device.recent_disconnects) == 3
    assert health.FLAKY_CONNECTION in device.warnings


async def events_of(fleet: Fleet, device_id: str, **params: object) -> list[dict[str, object]]:
    response = await fleet.api.get(
        "/v1/events",
        token=fleet.world.tokens["partner_admin"],
        params={"device_id": device_id, **params},
    )
    assert response.status_code == 200
    items: list[dict[str, object]] = response.json()["items"]
    return items


async def wait_acknowledged(sim: SimulatedDevice, event: protocol.DeviceEvent) -> None:
    await eventually(lambda: event.event_id in sim.acked_events, seconds=5)


async def test_events_are_stored_and_acknowledged(fleet: Fleet) -> None:
    device, sim = await fleet.run("doorbell")
    event = sim.ring()
    await wait_acknowledged(sim, event)
    assert sim.pending_events == {}
    [stored] = await events_of(fleet, device["id"], type="doorbell_rang")
    assert stored["event_id"] == str(event.event_id)
    assert stored["site_id"] == fleet.world.site_id


async def test_an_event_sent_twice_is_stored_once(fleet: Fleet) -> None:
    device, sim = await fleet.run("doorbell", faults=Faults(duplicate_events=1.0))
    event = sim.ring()
    await wait_acknowledged(sim, event)
    assert len(await events_of(fleet, device["id"])) == 1
    async with fleet.runtime.read_session_factory() as session:
        count = (
            await session.execute(
                select(func.count())
                .select_from(OutboxMessage)
                .where(
                    OutboxMessage.topic == "device.event",
                    OutboxMessage.aggregate_id == uuid.UUID(device["id"]),
                )
            )
        ).scalar_one()
    assert count == 1


async def test_events_unacknowledged_at_a_disconnect_are_resent_and_stored_once(
    fleet: Fleet,
) -> None:
    device, sim = await fleet.run("doorbell")
    first = sim.ring()
    await wait_acknowledged(sim, first)
    # The gateway acknowledged, but pretend the acknowledgement was lost: the device
    # still holds the event, and sends it again after reconnecting.
    sim.pending_events[first.event_id] = (first, 0.0)
    await sim.drop_connection()
    async with asyncio.timeout(30):
        await sim.connected.wait()
    await wait_acknowledged(sim, first)
    for _ in range(50):
        if not sim.pending_events:
            break
        await asyncio.sleep(0.05)
    assert sim.pending_events == {}
    assert len(await events_of(fleet, device["id"])) == 1


async def test_events_page_by_cursor_and_filter_by_time(fleet: Fleet) -> None:
    device, sim = await fleet.run("doorbell")
    rung = [sim.ring() for _ in range(5)]
    for event in rung:
        await wait_acknowledged(sim, event)
    first = await fleet.api.get(
        "/v1/events",
        token=fleet.world.tokens["partner_admin"],
        params={"device_id": device["id"], "limit": 3},
    )
    second = await fleet.api.get(
        "/v1/events",
        token=fleet.world.tokens["partner_admin"],
        params={"device_id": device["id"], "limit": 3, "cursor": first.json()["next_cursor"]},
    )
    ids = [e["event_id"] for e in first.json()["items"] + second.json()["items"]]
    assert sorted(ids) == sorted(str(e.event_id) for e in rung)
    assert second.json()["next_cursor"] is None
    later = await events_of(fleet, device["id"], since=rung[3].occurred_at.isoformat())
    assert {e["event_id"] for e in later} == {str(rung[3].event_id), str(rung[4].event_id)}


async def test_a_time_request_is_answered(fleet: Fleet) -> None:
    _, sim = await fleet.run("entrance_reader", faults=Faults(clock_offset=-3.0))
    sim.request_time()
    for _ in range(100):
        if sim.time_offsets_ms:
            break
        await asyncio.sleep(0.02)
    # This device's clock is three seconds behind the server's: its offset, its clock
    # minus the server's, is about -3 s — the sign the server computes and documents.
    assert -3200 < sim.time_offsets_ms[0] < -2800


async def test_a_batch_with_an_event_already_stored_stores_the_rest_and_acknowledges_all(
    fleet: Fleet,
) -> None:
    """One statement stores a batch: a repeat of a stored event (or twice in the batch)
    is skipped, the others stored each with its outbox message, and every one is
    acknowledged."""
    device = await fleet.provision("doorbell", entrance=None)
    device_id = uuid.UUID(device["id"])
    acked: list[uuid.UUID] = []

    async def publish(topic: str, payload: bytes, qos: int) -> None:
        acked.extend(protocol.EventsAck.model_validate_json(payload).event_ids)

    ingestor = EventIngestor(fleet.runtime, publish)
    now = fleet.runtime.clock.now()
    first, second, third = (
        protocol.DeviceEvent(
            event_id=uuid.uuid4(),
            type="door_opened",
            occurred_at=now - timedelta(seconds=n),
            data={"n": n, "nested": {"list": [1, "two"]}},
        )
        for n in range(3)
    )
    await ingestor.flush([Arrival(device_id, first)])
    await ingestor.flush(
        [Arrival(device_id, e) for e in (first, second, third, second)]  # first: stored
    )
    assert ingestor.stored == 3
    assert acked == [first.event_id, first.event_id, second.event_id, third.event_id]
    stored = await events_of(fleet, device["id"])
    assert sorted(e["event_id"] for e in stored) == sorted(
        str(e.event_id) for e in (first, second, third)
    )
    async with fleet.runtime.read_session_factory() as session:
        messages = (
            await session.execute(
                select(OutboxMessage)
                .where(
                    OutboxMessage.topic == "device.event",
                    OutboxMessage.aggregate_id == device_id,
                )
                .order_by(OutboxMessage.id)
            )
        ).scalars()
        payloads = {m.payload["event_id"]: m.payload for m in messages}
        records = {
            r.event_id: r.id
            for r in (
                await session.execute(
                    select(DeviceEventRecord).where(DeviceEventRecord.device_id == device_id)
                )
            ).scalars()
        }
    assert len(payloads) == 3
    for event in (first, second, third):
        expected = outbox.message(
            "device.event",
            partner_id=None,
            aggregate_id=None,
            device_id=device_id,
            site_id=uuid.UUID(fleet.world.site_id),
            event_id=event.event_id,
            record_id=records[event.event_id],
            type=event.type,
            occurred_at=event.occurred_at,
            data=event.data,
        )["payload"]
        actual = dict(payloads[str(event.event_id)])
        actual.pop("actor")
        assert actual == expected
