"""A flapping device is one alert, not hundreds: an offline alert goes out only once the
device has stayed offline for the grace period, at most once per device per window, with
the flaps in between counted in it. Time is the runtime's controllable clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import select

from sesame.devices import health
from sesame.kit.clock import OffsetClock
from sesame.kit.db import write_intent
from sesame.models import Delivery, Device
from sesame.notifications import outages
from sesame.notifications.repository import NotificationRepository
from sesame.notifications.router import route_batch
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime
from tests.support import World

GRACE = timedelta(seconds=120)  # the defaults
WINDOW = timedelta(seconds=3600)


@pytest.fixture
async def clock(runtime: Runtime) -> OffsetClock:
    """The runtime's clock, and the router's cursor at the outbox's end: earlier tests'
    events in the shared database are not this test's."""
    assert isinstance(runtime.clock, OffsetClock)
    assert runtime.settings.notify_offline_grace_seconds == GRACE.total_seconds()
    assert runtime.settings.notify_offline_window_seconds == WINDOW.total_seconds()
    with write_intent():
        async with runtime.session_factory() as session:
            state = await NotificationRepository(session).state()
            state.outbox_cursor = await outbox.last_id(session)
            await session.commit()
    return runtime.clock


async def presence(runtime: Runtime, device_id: UUID, *, online: bool) -> None:
    """What the gateway does when a device's retained status flips: the row and its event."""
    with write_intent():
        async with runtime.session_factory() as session:
            device = await session.get(Device, device_id)
            assert device is not None
            now = runtime.clock.now()
            if online:
                changed = health.went_online(device, now, device.boot_id)
            else:
                changed = health.went_offline(device, now, "disconnected")
            assert changed
            await outbox.append(
                session,
                [
                    outbox.message(
                        "device.online" if online else "device.offline",
                        partner_id=device.partner_id,
                        aggregate_id=device.id,
                        site_id=device.site_id,
                        at=now,
                    )
                ],
            )
            await session.commit()


async def route_everything(runtime: Runtime) -> None:
    while await route_batch(runtime) > 0:
        pass


async def alerts_about(runtime: Runtime, world: World) -> list[Any]:
    """Every device-offline message to a person about the world's site (its only device
    that goes offline here)."""
    async with runtime.session_factory() as session:
        result = await session.execute(
            select(Delivery)
            .where(
                Delivery.event_type == "device.offline",
                Delivery.site_id == UUID(world.site_id),
                Delivery.channel != "webhook",
            )
            .order_by(Delivery.created_at)
        )
        return list(result.scalars())


async def test_three_hundred_flaps_are_one_alert_that_counts_them(
    runtime: Runtime, world: World, clock: OffsetClock
) -> None:
    """300 disconnections in a few minutes: nothing during them, one alert once the device
    stays down, none again within the hour, and one more after it if still down."""
    device_id = UUID(world.ids["device"])
    await presence(runtime, device_id, online=True)
    for _ in range(300):
        await presence(runtime, device_id, online=False)
        clock.advance(timedelta(milliseconds=400))
        await presence(runtime, device_id, online=True)
        clock.advance(timedelta(milliseconds=400))
    await presence(runtime, device_id, online=False)  # and down it stays
    await route_everything(runtime)
    await outages.alert_due(runtime)
    assert await alerts_about(runtime, world) == []  # not down for the grace period yet

    clock.advance(GRACE + timedelta(seconds=1))
    await outages.alert_due(runtime)
    await outages.alert_due(runtime)  # the next minute's run adds nothing
    first = await alerts_about(runtime, world)
    assert first, "the managers are told"
    assert {d.category for d in first} == {"devices"}
    assert {d.staff_id for d in first} == {UUID(world.staff["site_manager"]["id"])}
    assert len(first) == 1  # one destination (the manager's account address), one alert
    assert "301" in first[0].body  # the flaps, summarised
    assert first[0].data["flaps"] == "301"

    # It comes back and drops again: within the window, no second alert...
    await presence(runtime, device_id, online=True)
    await presence(runtime, device_id, online=False)
    await route_everything(runtime)
    clock.advance(GRACE * 2)
    await outages.alert_due(runtime)
    assert len(await alerts_about(runtime, world)) == 1
    # ...and once the window is over, still down: one more, about this outage.
    clock.advance(WINDOW)
    await outages.alert_due(runtime)
    later = await alerts_about(runtime, world)
    assert len(later) == 2
    assert later[1].title == "기기 연결 끊김"  # one disconnection: the plain offline alert


async def test_a_device_back_within_the_grace_period_alerts_nobody(
    runtime: Runtime, world: World, clock: OffsetClock
) -> None:
    """Offline for thirty seconds, then back: no message, then or later."""
    device_id = UUID(world.ids["device"])
    await presence(runtime, device_id, online=True)
    await presence(runtime, device_id, online=False)
    clock.advance(timedelta(seconds=30))
    await presence(runtime, device_id, online=True)
    await route_everything(runtime)
    clock.advance(GRACE * 3)
    await outages.alert_due(runtime)
    assert await alerts_about(runtime, world) == []
