"""Another partner's devices, attempts and events are invisible, for every role."""

from __future__ import annotations

import asyncio

import pytest

from tests.device_fixtures import Fleet
from tests.support import Api, World

ROLES = ["partner_admin", "site_manager", "installer", "api_key"]


@pytest.mark.parametrize("role", ROLES)
async def test_foreign_devices_attempts_and_events_are_not_found(
    dapi: Api, fleet: Fleet, other_dworld: World, role: str, device_runtime: object
) -> None:
    theirs = Fleet(dapi, other_dworld, device_runtime)  # type: ignore[arg-type]
    try:
        device, sim = await theirs.run("entrance_reader")
        owner = other_dworld.tokens["partner_admin"]
        attempt = (
            await dapi.post(
                f"/v1/devices/{device['id']}/commands",
                params={"wait": 5},
                token=owner,
                json={"action": "open"},
            )
        ).json()
        assert attempt["status"] == "success"
        for _ in range(100):
            if not sim.pending_events:
                break
            await asyncio.sleep(0.05)
        token = fleet.world.tokens[role]
        assert (await dapi.get(f"/v1/devices/{device['id']}", token=token)).status_code == 404
        assert (
            await dapi.get(f"/v1/action-attempts/{attempt['id']}", token=token)
        ).status_code == 404
        command = await dapi.post(
            f"/v1/devices/{device['id']}/commands", token=token, json={"action": "open"}
        )
        assert command.status_code == 404
        opened = await dapi.post(f"/v1/entrances/{other_dworld.ids['entrance']}/open", token=token)
        assert opened.status_code == 404
        for path in ("/v1/devices", "/v1/action-attempts", "/v1/events"):
            listed = await dapi.get(path, token=token, params={"limit": 200})
            assert listed.status_code == 200
            ids = {item.get("device_id", item["id"]) for item in listed.json()["items"]}
            assert device["id"] not in ids, path
        # Their owner sees all of it.
        events = await dapi.get("/v1/events", token=owner, params={"device_id": device["id"]})
        assert events.json()["items"]
        assert sim.executed
        assert len(sim.executed) == 1
    finally:
        await theirs.close()
