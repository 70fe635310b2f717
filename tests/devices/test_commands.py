"""Commands end to end: HTTP → action attempt → broker → simulated device → result → HTTP."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from typing import Any

from sesame.simulators import Faults
from tests.device_fixtures import Fleet
from tests.support import ShiftableClock, eventually


async def command(
    fleet: Fleet, device_id: str, body: dict[str, Any], wait: float | None = None
) -> dict[str, Any]:
    """A partner's command to a device, and the attempt it answers with (after ``wait``)."""
    response = await fleet.api.post(
        f"/v1/devices/{device_id}/commands",
        params={} if wait is None else {"wait": wait},
        token=fleet.world.tokens["partner_admin"],
        json=body,
    )
    attempt: dict[str, Any] = response.json()
    return attempt


async def test_opening_an_entrance_succeeds_and_is_confirmed(fleet: Fleet) -> None:
    device, sim = await fleet.run("entrance_reader")
    response = await fleet.api.post(
        f"/v1/entrances/{fleet.world.ids['entrance']}/open",
        params={"wait": 5},
        token=fleet.world.tokens["site_manager"],
        json={"duration_s": 3},
    )
    assert response.status_code == 201
    attempt = response.json()
    assert attempt["status"] == "success"
    assert attempt["was_confirmed_by_device"] is True
    assert attempt["device_id"] == device["id"]
    assert attempt["send_count"] == 1
    assert response.headers["location"] == f"/v1/action-attempts/{attempt['id']}"
    assert [e.action for e in sim.executed] == ["open"]
    assert sim.executed[0].params == {"duration_s": 3}
    assert sim.relay.activations == 1
    again = await fleet.api.get(
        attempt["location"] if "location" in attempt else f"/v1/action-attempts/{attempt['id']}",
        token=fleet.world.tokens["partner_admin"],
    )
    assert again.json()["status"] == "success"


async def test_without_wait_the_attempt_comes_back_pending(fleet: Fleet) -> None:
    device, sim = await fleet.run("door_lock")
    response = await fleet.api.post(
        f"/v1/devices/{device['id']}/commands",
        token=fleet.world.tokens["partner_admin"],
        json={"action": "unlock"},
    )
    assert response.status_code == 201
    assert response.json()["status"] == "pending"
    finished = await fleet.api.get(
        f"/v1/action-attempts/{response.json()['id']}",
        params={"wait": 5},
        token=fleet.world.tokens["partner_admin"],
    )
    assert finished.json()["status"] == "success"
    assert sim.bolt.value == "unlocked"


async def test_an_offline_device_gives_expired_within_the_wait(fleet: Fleet) -> None:
    device = await fleet.provision("entrance_reader")
    attempt = await command(fleet, device["id"], {"action": "open", "ttl_seconds": 2}, wait=4)
    assert attempt["status"] == "expired"
    assert attempt["error"]["type"] == "command_expired"
    assert attempt["send_count"] == 0


async def test_a_silent_device_gives_a_timeout_error_within_the_wait(fleet: Fleet) -> None:
    device, sim = await fleet.run("entrance_reader", faults=Faults(unresponsive=True))
    attempt = await command(fleet, device["id"], {"action": "open", "ttl_seconds": 3}, wait=6)
    assert attempt["status"] == "error"
    assert attempt["error"]["type"] == "device_timeout"
    # Transport-loss retries went out, bounded by the budget, and nothing ran.
    assert 1 < attempt["send_count"] <= 4
    assert sim.executed == []


async def test_a_lost_result_is_retried_and_the_command_runs_once(fleet: Fleet) -> None:
    device, sim = await fleet.run("door_lock", faults=Faults(drop_results=1.0))
    task = asyncio.create_task(
        command(fleet, device["id"], {"action": "unlock", "ttl_seconds": 8}, wait=8)
    )
    await eventually(lambda: sim.executed)  # the first copy ran; its result was lost
    sim.faults.drop_results = 0.0  # the next copy's result gets through
    attempt = await task
    assert attempt["status"] == "success"
    assert attempt["send_count"] >= 2
    assert len(sim.executed) == 1  # the repeat was answered from memory, not executed


async def test_busy_with_a_repeated_command_does_not_end_it_and_the_success_counts(
    fleet: Fleet,
) -> None:
    """A slow actuator answers the resent copy with busy (section 4); the attempt goes on
    and ends with the device's real result."""
    device, sim = await fleet.run("door_lock", faults=Faults(actuation_seconds=3.0))
    attempt = await command(fleet, device["id"], {"action": "unlock", "ttl_seconds": 10}, wait=10)
    assert attempt["status"] == "success", attempt
    assert attempt["error"] is None
    assert attempt["send_count"] >= 2  # it was resent, and the repeat answered busy
    assert len(sim.executed) == 1


async def test_a_device_failure_is_an_error_with_its_code(fleet: Fleet) -> None:
    device, _sim = await fleet.run("door_lock", jammed=True)
    attempt = await command(fleet, device["id"], {"action": "lock"}, wait=5)
    assert attempt["status"] == "error"
    assert attempt["error"] == {
        "type": "device_failed",
        "code": "jammed",
        "message": "the bolt did not move",
    }
    assert attempt["send_count"] == 1  # a device that answers is never retried


async def test_commands_queue_one_at_a_time_in_order(fleet: Fleet) -> None:
    device, sim = await fleet.run("door_lock", faults=Faults(result_delay=0.2))
    token = fleet.world.tokens["partner_admin"]
    actions = ["unlock", "lock", "unlock", "lock"]
    ids = []
    for action in actions:
        response = await fleet.api.post(
            f"/v1/devices/{device['id']}/commands", token=token, json={"action": action}
        )
        ids.append(response.json()["id"])
    finished = [
        (await fleet.api.get(f"/v1/action-attempts/{i}", params={"wait": 10}, token=token)).json()
        for i in ids
    ]
    assert [a["status"] for a in finished] == ["success"] * 4
    assert [e.action for e in sim.executed] == actions
    # One in flight: each was sent only after the previous one finished.
    for previous, current in itertools.pairwise(finished):
        assert current["first_sent_at"] >= previous["completed_at"]


async def test_a_command_that_expired_while_offline_never_runs(fleet: Fleet) -> None:
    device = await fleet.provision("entrance_reader")
    sim = fleet.simulator(device)
    response = await fleet.api.post(
        f"/v1/devices/{device['id']}/commands",
        token=fleet.world.tokens["partner_admin"],
        json={"action": "open", "ttl_seconds": 1},
    )
    clock = fleet.runtime.clock
    assert isinstance(clock, ShiftableClock)
    clock.advance(timedelta(seconds=2))  # its time to live is over while it is offline
    await fleet.start(sim)

    async def finished() -> dict[str, Any] | None:
        attempt: dict[str, Any] = (
            await fleet.api.get(
                f"/v1/action-attempts/{response.json()['id']}",
                token=fleet.world.tokens["partner_admin"],
            )
        ).json()
        return attempt if attempt["status"] != "pending" else None

    attempt = await eventually(finished)
    assert attempt["status"] == "expired"
    # (The moved clock makes the device look 2 s slow, so it is told to correct itself.)
    assert [e for e in sim.executed if e.action == "open"] == []
    assert sim.rejected_late == []  # it was never even sent


async def test_a_queued_command_still_valid_runs_when_the_device_connects(fleet: Fleet) -> None:
    device = await fleet.provision("entrance_reader")
    sim = fleet.simulator(device)
    response = await fleet.api.post(
        f"/v1/devices/{device['id']}/commands",
        token=fleet.world.tokens["partner_admin"],
        json={"action": "open", "ttl_seconds": 20},
    )
    await fleet.start(sim)
    attempt = (
        await fleet.api.get(
            f"/v1/action-attempts/{response.json()['id']}",
            params={"wait": 5},
            token=fleet.world.tokens["partner_admin"],
        )
    ).json()
    assert attempt["status"] == "success"
    assert len(sim.executed) == 1


async def test_a_device_refuses_a_command_that_reaches_it_late(fleet: Fleet) -> None:
    """A device whose clock is ahead sees the command as expired and does not act (its
    clock cannot be corrected: sync_clock fails on it)."""
    device, sim = await fleet.run(
        "entrance_reader", faults=Faults(clock_offset=60, stuck_clock=True)
    )
    attempt = await command(fleet, device["id"], {"action": "open"}, wait=5)
    assert attempt["status"] == "error"
    assert attempt["error"]["type"] == "device_rejected"
    assert attempt["error"]["code"] == "expired"
    assert [e.action for e in sim.executed] in ([], ["sync_clock"])


async def test_unsupported_actions_and_bad_params_are_422(fleet: Fleet) -> None:
    device = await fleet.provision("elevator_agent")
    token = fleet.world.tokens["partner_admin"]
    unknown = await fleet.api.post(
        f"/v1/devices/{device['id']}/commands", token=token, json={"action": "unlock"}
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["path"] == ["body", "action"]
    bad = await fleet.api.post(
        f"/v1/devices/{device['id']}/commands",
        token=token,
        json={"action": "call", "params": {"floor": "roof"}},
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["path"][:3] == ["body", "params", "floor"]
    too_long = await fleet.api.post(
        f"/v1/devices/{device['id']}/commands",
        token=token,
        json={"action": "call", "params": {"floor": 3}, "ttl_seconds": 60},
    )
    assert too_long.status_code == 422


async def test_elevator_call_and_zwave_hub_unverified_unlock(fleet: Fleet) -> None:
    token = fleet.world.tokens["partner_admin"]
    elevator, elevator_sim = await fleet.run("elevator_agent")
    call = await fleet.api.post(
        f"/v1/devices/{elevator['id']}/commands",
        params={"wait": 5},
        token=token,
        json={"action": "call", "params": {"floor": -1}},
    )
    assert call.json()["status"] == "success"
    assert elevator_sim.calls == [-1]
    hub, _ = await fleet.run("zwave_hub")
    unverified = await fleet.api.post(
        f"/v1/devices/{hub['id']}/commands",
        params={"wait": 5},
        token=token,
        json={"action": "unlock", "params": {"node_id": 4}},
    )
    assert unverified.json()["status"] == "success"
    assert unverified.json()["was_confirmed_by_device"] is False


async def test_an_entrance_without_a_device_is_a_conflict(fleet: Fleet) -> None:
    token = fleet.world.tokens["partner_admin"]
    gate = await fleet.api.create(
        "/v1/entrances",
        token,
        {"site_id": fleet.world.site_id, "name": "parking gate", "kind": "parking_gate"},
    )
    response = await fleet.api.post(f"/v1/entrances/{gate['id']}/open", token=token)
    assert response.status_code == 409
    assert response.json()["type"] == "no_device"


async def _the_entrances_only_reader_gone_offline(fleet: Fleet) -> dict[str, Any]:
    """The world's entrance with one reader, running and then switched off."""
    retired = await fleet.api.delete(
        f"/v1/devices/{fleet.world.ids['device']}", token=fleet.world.tokens["partner_admin"]
    )
    assert retired.status_code == 204, retired.text
    device, sim = await fleet.run("entrance_reader")
    await sim.stop()
    await fleet.wait_for(lambda d: not d["online"], device["id"])
    return device


async def test_opening_through_a_device_known_offline_fails_at_once(fleet: Fleet) -> None:
    """A door whose device is offline answers `device_offline` now (no attempt is left
    to wait out its time to live); with `queue=true` the command waits for the device
    and runs when it is back."""
    device = await _the_entrances_only_reader_gone_offline(fleet)
    path = f"/v1/entrances/{fleet.world.ids['entrance']}/open"
    token = fleet.world.tokens["site_manager"]
    refused = await fleet.api.post(path, params={"wait": 10}, token=token, json={"ttl_seconds": 30})
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == "device_offline"
    assert refused.json()["details"]["device_id"] == device["id"]
    attempts = await fleet.api.get(
        "/v1/action-attempts", params={"device_id": device["id"]}, token=token
    )
    assert attempts.json()["items"] == []

    queued = await fleet.api.post(
        path, params={"queue": "true"}, token=token, json={"ttl_seconds": 30}
    )
    assert queued.status_code == 201, queued.text
    assert queued.json()["status"] == "pending"
    back = await fleet.start(fleet.simulator(device))
    finished = await fleet.api.get(
        f"/v1/action-attempts/{queued.json()['id']}", params={"wait": 10}, token=token
    )
    assert finished.json()["status"] == "success"
    assert len(back.executed) == 1


async def test_a_residents_open_through_an_offline_device_spends_nothing(fleet: Fleet) -> None:
    """The resident's key allows it, but the device is offline: `device_offline` at once,
    and the key's use is not spent."""
    from tests.keys.test_keys_e2e import resident_key, resident_token

    await _the_entrances_only_reader_gone_offline(fleet)
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    refused = await fleet.api.post(
        f"/v1/entrances/{fleet.world.ids['entrance']}/open", params={"wait": 10}, token=owner
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == "device_offline"
    assert (await resident_key(fleet))["uses_count"] == 0
