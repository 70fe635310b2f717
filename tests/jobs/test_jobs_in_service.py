"""Jobs inside the service: a key that expired while nothing ran is expired at start-up;
a PIN code for a stay reaches the lock before the stay and leaves it after; platform
administrators see the jobs, dead ones with their reason, and can retry them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from sesame.app import create_app
from sesame.auth.sms import MemorySmsSender
from sesame.jobs import service as jobs
from sesame.kit.db import write_intent
from sesame.models import OutboxMessage
from sesame.runtime import Runtime, build_runtime
from tests.conftest import test_settings
from tests.device_fixtures import Fleet
from tests.keys.test_pins import lock
from tests.support import Api, ShiftableClock, World, eventually, lock_job, served_world


@pytest.fixture
def url(own_database_url: str) -> str:
    return own_database_url


async def test_a_key_that_expired_while_nothing_ran_expires_at_start_up(url: str) -> None:
    clock = ShiftableClock()
    # First a server without workers: the key is created, then time passes its end.
    quiet = build_runtime(
        test_settings(url, worker_enabled=False), clock=clock, sms_sender=MemorySmsSender()
    )
    async with served_world(quiet, "10.9.0.1") as (api, world):
        key = await api.create(
            "/v1/keys",
            world.tokens["partner_admin"],
            {
                "person_id": world.ids["person"],
                "kind": "courier",
                "carrier": "CJ Logistics",
                "building_id": world.ids["building"],
                "ends_at": (clock.now() + timedelta(hours=1)).isoformat(),
            },
        )
        assert key["status"] == "active"
    await quiet.close()
    clock.advance(timedelta(hours=2))

    # Then a server with its worker: the overdue expiry runs at once.
    started = build_runtime(test_settings(url), clock=clock, sms_sender=MemorySmsSender())
    app = create_app(runtime=started)
    try:
        async with app.router.lifespan_context(app):

            async def expired() -> list[Any]:
                async with started.read_session_factory() as session:
                    rows = await session.execute(
                        select(OutboxMessage).where(
                            OutboxMessage.topic == "key.expired",
                            OutboxMessage.aggregate_id == uuid.UUID(key["id"]),
                        )
                    )
                    return list(rows.scalars())

            [message] = await eventually(expired)
            assert message.payload["ends_at"] is not None
    finally:
        await started.close()


async def test_a_stay_code_reaches_the_lock_before_the_stay_and_leaves_after(
    fleet: Fleet,
) -> None:
    device, sim = await lock(fleet)
    token = fleet.world.tokens["partner_admin"]
    clock = fleet.runtime.clock
    assert isinstance(clock, ShiftableClock)
    check_in = clock.now() + timedelta(hours=3)
    created = await fleet.api.create(
        "/v1/pin-codes",
        token,
        {
            "device_id": device["id"],
            "code": "7391",
            "name": "stay",
            "starts_at": check_in.isoformat(),
            "ends_at": (check_in + timedelta(days=1)).isoformat(),
        },
    )
    job = await lock_job(fleet.runtime, device["id"])  # the decision: "later", at lead time
    lead = timedelta(minutes=fleet.runtime.settings.pin_lead_minutes)
    assert abs((job.due_at - (check_in - lead)).total_seconds()) < 1
    assert "7391" not in sim.slots.values()  # three hours early: not yet
    pin = (await fleet.api.get(f"/v1/pin-codes/{created['id']}", token=token)).json()
    assert pin["status"] == "unset"

    clock.advance(timedelta(hours=2, seconds=1))  # the lead time (60 min) has begun

    async def on_lock() -> bool:
        return "7391" in sim.slots.values()

    await eventually(on_lock)
    api_key = fleet.world.tokens["api_key"]  # staff tokens expire as the clock is moved

    async def status_is(wanted: str) -> bool:
        return (await pin_status_with(fleet, created["id"], api_key))["status"] == wanted

    await eventually(lambda: status_is("set"))

    clock.advance(timedelta(days=1, hours=1))  # the stay is over

    async def off_lock() -> bool:
        return "7391" not in sim.slots.values()

    await eventually(off_lock)
    await eventually(lambda: status_is("removed"))


async def test_a_code_tied_to_a_scheduled_key_is_on_the_lock_only_in_its_windows(
    fleet: Fleet,
) -> None:
    device, sim = await lock(fleet)
    token = fleet.world.tokens["partner_admin"]
    api_key = fleet.world.tokens["api_key"]  # staff tokens expire as the clock is moved
    clock = fleet.runtime.clock
    assert isinstance(clock, ShiftableClock)
    site = (await fleet.api.get(f"/v1/sites/{fleet.world.site_id}", token=token)).json()
    zone = ZoneInfo(site["time_zone"])
    opens = (clock.now().astimezone(zone) + timedelta(hours=2)).replace(second=0, microsecond=0)
    closes = opens + timedelta(hours=1)
    key = await fleet.api.create(
        "/v1/keys",
        token,
        {
            "person_id": fleet.world.ids["person"],
            "kind": "staff",
            "name": "cleaner, daily",
            "building_id": fleet.world.ids["building"],
            "schedule": {
                "weekdays": list(range(7)),
                "start": opens.strftime("%H:%M"),
                "end": closes.strftime("%H:%M"),
            },
        },
    )
    created = await fleet.api.create(
        "/v1/pin-codes",
        token,
        {"device_id": device["id"], "code": "5820", "name": "cleaner", "key_id": key["id"]},
    )
    job = await lock_job(fleet.runtime, device["id"])  # the decision: at the window, no lead
    assert abs((job.due_at - opens).total_seconds()) < 1
    assert "5820" not in sim.slots.values()  # two hours before the window: not even early

    async def on_lock() -> bool:
        return "5820" in sim.slots.values()

    async def off_lock() -> bool:
        return "5820" not in sim.slots.values()

    async def status_is(wanted: str) -> bool:
        return (await pin_status_with(fleet, created["id"], api_key))["status"] == wanted

    def move_to(moment: datetime) -> None:
        clock.advance(moment - clock.now())

    for day in range(2):  # today's window, then tomorrow's
        move_to(opens + timedelta(days=day, seconds=5))
        await eventually(on_lock)
        await eventually(lambda: status_is("set"))
        move_to(closes + timedelta(days=day, seconds=5))
        await eventually(off_lock)
        await eventually(lambda: status_is("unset"))  # waiting for the next window

    move_to(opens + timedelta(days=2, seconds=5))
    await eventually(on_lock)
    revoked = await fleet.api.delete(f"/v1/keys/{key['id']}", token=api_key)
    assert revoked.status_code == 204, revoked.text
    await eventually(off_lock)  # the key's end takes its code off at once
    await eventually(lambda: status_is("removed"))


async def pin_status_with(fleet: Fleet, pin_id: str, token: str) -> dict[str, Any]:
    response = await fleet.api.get(f"/v1/pin-codes/{pin_id}", token=token)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_platform_administrators_see_dead_jobs_and_retry_them(
    api: Api, world: World, admin_token: str, runtime: Runtime
) -> None:
    kind = f"test.missing.{uuid.uuid4().hex[:8]}"
    with write_intent():
        async with runtime.session_factory() as session:
            await jobs.schedule(
                session,
                runtime,
                kind,
                key=kind,
                due_at=datetime.now(UTC) - timedelta(seconds=1),
                max_attempts=1,
            )
            await session.commit()

    async def dead() -> list[dict[str, Any]]:
        listing = await api.get(
            "/v1/jobs", token=admin_token, params={"status": "dead", "kind": kind}
        )
        assert listing.status_code == 200
        return list(listing.json()["items"])

    [job] = await eventually(dead)
    assert job["key"] == kind
    assert job["attempts"] == 1
    assert f"no handler for jobs of kind '{kind}'" in job["last_error"]
    assert (await api.get(f"/v1/jobs/{job['id']}", token=admin_token)).json()["id"] == job["id"]

    for role in ("partner_admin", "site_manager"):
        refused = await api.get("/v1/jobs", token=world.tokens[role])
        assert refused.status_code == 403

    retried = await api.post(f"/v1/jobs/{job['id']}/retry", token=admin_token)
    assert retried.status_code == 200, retried.text
    assert retried.json()["attempts"] == 0
    assert retried.json()["status"] in ("scheduled", "running", "dead")
    again = await api.post(f"/v1/jobs/{uuid.uuid4()}/retry", token=admin_token)
    assert again.status_code == 404


async def test_an_expiring_key_is_blocked_on_the_readers_at_its_end(fleet: Fleet) -> None:
    _, reader = await fleet.run("entrance_reader")
    clock = fleet.runtime.clock
    key = await fleet.api.create(
        "/v1/keys",
        fleet.world.tokens["partner_admin"],
        {
            "person_id": fleet.world.ids["person"],
            "kind": "courier",
            "carrier": "CJ Logistics",
            "building_id": fleet.world.ids["building"],
            "ends_at": (clock.now() + timedelta(seconds=2)).isoformat(),
        },
    )

    async def blocked() -> bool:
        revoked = {str(k) for k in reader.trust.revoked_keys} if reader.trust else set()
        return key["id"] in revoked

    assert not await blocked()  # credentials it was given are still valid until the end
    await eventually(blocked)
    gone = await fleet.api.get(f"/v1/keys/{key['id']}", token=fleet.world.tokens["api_key"])
    assert gone.json()["status"] == "expired"
