"""Device clocks: the server measures each device's offset with the four-timestamp
exchange, flags a drifting clock, corrects it with ``sync_clock``, and apps read the
server's time at /v1/time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from sesame.devices import protocol
from sesame.devices.clock_sync import offset_and_delay
from sesame.models import ActionAttempt, OutboxMessage
from sesame.simulators.device import Faults
from tests.device_fixtures import Fleet
from tests.support import Api


def test_offset_and_delay_follow_ntp() -> None:
    # The device is 5 s ahead; 40 ms each way; the server takes 2 ms to answer.
    report = protocol.TimeReport(
        request_id="00000000-0000-0000-0000-000000000001",
        t1_ms=1_000_000 + 5_000,
        t2_ms=1_000_040,
        t3_ms=1_000_042,
        t4_ms=1_000_082 + 5_000,
    )
    assert offset_and_delay(report) == (5_000, 80)


async def test_a_drifting_clock_is_flagged_and_corrected(fleet: Fleet) -> None:
    # Four seconds behind and losing 500 ms an hour.
    device, sim = await fleet.run(
        "entrance_reader", faults=Faults(clock_offset=-4.0, clock_drift_ppm=-140)
    )
    # Measured on connection (the event keeps the figure), flagged, sync_clock sent; the
    # device stepped its clock and its next exchange cleared the warning.
    corrected = await fleet.wait_for(
        lambda d: (
            d["clock_offset_ms"] is not None
            and abs(d["clock_offset_ms"]) < 500
            and not any(w["code"] == "clock_drift" for w in d["warnings"])
        ),
        device["id"],
    )
    assert sim.clock_syncs == 1
    assert abs(sim.clock.offset()) < 0.5
    assert 0 <= corrected["clock_delay_ms"] < 2000
    assert any(e.action == "sync_clock" for e in sim.executed)
    async with fleet.runtime.read_session_factory() as session:
        events = (
            (
                await session.execute(
                    select(OutboxMessage).where(
                        OutboxMessage.topic == "device.clock_drift",
                        OutboxMessage.aggregate_id == sim_id(device),
                    )
                )
            )
            .scalars()
            .all()
        )
    assert len(events) == 1  # one event per drift, not per measurement
    assert -4300 < events[0].payload["offset_ms"] < -3700
    assert events[0].payload["site_id"] == device["site_id"]


async def test_a_clock_within_the_threshold_is_left_alone(fleet: Fleet) -> None:
    device, sim = await fleet.run("entrance_reader", faults=Faults(clock_offset=0.8))
    checked = await fleet.wait_for(lambda d: d["clock_offset_ms"] is not None, device["id"])
    assert 600 < checked["clock_offset_ms"] < 1000
    assert not any(w["code"] == "clock_drift" for w in checked["warnings"])
    # The offset and any correction are written in one transaction: with the offset
    # visible, the decision is made, and it was to leave the clock alone.
    async with fleet.runtime.session_factory() as session:
        syncs = (
            (
                await session.execute(
                    select(ActionAttempt).where(
                        ActionAttempt.device_id == sim_id(device),
                        ActionAttempt.action == "sync_clock",
                    )
                )
            )
            .scalars()
            .all()
        )
    assert syncs == []
    assert sim.clock_syncs == 0


async def test_apps_read_the_server_time(api: Api) -> None:
    before = datetime.now(UTC)
    answer = await api.get("/v1/time")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    server = datetime.fromisoformat(body["now"])
    assert abs((server - before).total_seconds()) < 5
    assert abs(body["unix_ms"] - server.timestamp() * 1000) < 1


def sim_id(device: dict[str, Any]) -> Any:
    from uuid import UUID

    return UUID(device["id"])
