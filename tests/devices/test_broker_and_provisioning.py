"""Who may connect to the broker, and what they may touch; provisioning and credentials."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import urlsplit

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv311
from sqlalchemy import select

from sesame.devices import protocol
from sesame.devices.broker import device_may
from sesame.models import Device
from tests.device_fixtures import Fleet
from tests.support import eventually


class Probe:
    """A raw MQTT client, to try what a rogue device would."""

    def __init__(self, url: str, client_id: str, username: str | None, password: str | None):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.client = gmqtt.Client(client_id, clean_session=True)
        self.client.set_config({"reconnect_retries": 0})
        if username is not None:
            self.client.set_auth_credentials(username, password)
        self.received: list[str] = []
        self.client.on_message = self._on_message

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        self.received.append(topic)
        return 0

    async def connect(self) -> bool:
        try:
            await asyncio.wait_for(
                self.client.connect(self.host, self.port, keepalive=30, version=MQTTv311), 5
            )
        except Exception:
            return False
        await asyncio.sleep(0.1)
        return bool(self.client.is_connected)

    async def close(self) -> None:
        if self.client.is_connected:
            await self.client.disconnect()


def broker_url(device: dict[str, Any]) -> str:
    return str(device["credentials"]["mqtt"]["url"])


async def test_only_a_devices_own_credentials_let_it_connect(
    fleet: Fleet, broker_kind: str
) -> None:
    device = await fleet.provision("entrance_reader")
    await fleet.start(fleet.simulator(device), online=False)  # the broker knows it now
    mqtt = device["credentials"]["mqtt"]
    url = broker_url(device)
    attempts = {
        "wrong password": Probe(url, mqtt["client_id"], mqtt["username"], "not-the-secret"),
        "unknown device": Probe(url, str(uuid.uuid4()), str(uuid.uuid4()), mqtt["password"]),
        "anonymous": Probe(url, "anonymous-probe", None, None),
        "gateway name": Probe(url, "rogue", protocol.GATEWAY_USERNAME, mqtt["password"]),
    }
    for label, probe in attempts.items():
        assert not await probe.connect(), label
        await probe.close()
    if broker_kind == "embedded":
        # The embedded broker also refuses another client id; Mosquitto replaces it with
        # the username (test_broker_connect.py).
        other_id = Probe(url, "someone-else", mqtt["username"], mqtt["password"])
        assert not await other_id.connect()


async def test_a_device_id_has_one_spelling_as_username_and_in_topics(fleet: Fleet) -> None:
    """Upper case, no hyphens, braces or a URN prefix name no device: a device's username
    and its topics are its id as Sesame writes it, on either broker, so one device never
    has two names (and two sessions)."""
    device = await fleet.provision("entrance_reader")
    await fleet.start(fleet.simulator(device), online=False)  # the broker knows it now
    mqtt = device["credentials"]["mqtt"]
    device_id = uuid.UUID(device["id"])
    assert mqtt["username"] == str(device_id)
    for spelling in (str(device_id).upper(), device_id.hex, f"{{{device_id}}}", device_id.urn):
        probe = Probe(broker_url(device), spelling, spelling, mqtt["password"])
        assert not await probe.connect(), spelling
        await probe.close()
        topic = f"{protocol.TOPIC_ROOT}/{spelling}/{protocol.Channel.EVENTS.value}"
        assert not device_may(mqtt["username"], "publish", topic), spelling
    own = protocol.topic(device_id, protocol.Channel.EVENTS)
    assert device_may(mqtt["username"], "publish", own)


async def test_a_device_cannot_touch_another_devices_topics(fleet: Fleet) -> None:
    victim, victim_sim = await fleet.run("door_lock")
    rogue = await fleet.provision("entrance_reader", entrance=None)
    mqtt = rogue["credentials"]["mqtt"]
    await fleet.start(fleet.simulator(rogue), online=False)
    await fleet.devices.pop().stop()  # free the client id for the probe
    probe = Probe(broker_url(rogue), mqtt["client_id"], mqtt["username"], mqtt["password"])
    assert await probe.connect()
    try:
        probe.client.subscribe("#", qos=1)
        probe.client.subscribe(protocol.topic(victim["id"], protocol.Channel.COMMANDS), qos=1)
        probe.client.subscribe(protocol.wildcard(protocol.Channel.EVENTS), qos=1)
        forged = protocol.DeviceEvent(
            event_id=uuid.uuid4(), type="access_granted", occurred_at=victim_sim.clock.now()
        )
        probe.client.publish(
            protocol.topic(victim["id"], protocol.Channel.EVENTS), protocol.encode(forged), qos=1
        )
        probe.client.publish(
            protocol.topic(victim["id"], protocol.Channel.STATUS),
            protocol.encode(protocol.Presence(online=False)),
            qos=1,
            retain=True,
        )
        # A command for the victim and an event of the victim's: the probe must see neither.
        response = await fleet.api.post(
            f"/v1/devices/{victim['id']}/commands",
            params={"wait": 5},
            token=fleet.world.tokens["partner_admin"],
            json={"action": "unlock"},
        )
        assert response.json()["status"] == "success"
        opened = victim_sim.emit("door_opened")
        # Once the gateway has acknowledged the event the broker has routed it to every
        # subscriber it has: the probe would have it by now.
        await eventually(lambda: opened.event_id in victim_sim.acked_events)
        # Only its own trust (a reader bound to no entrance is told so) may reach it.
        own_trust = protocol.topic(rogue["id"], protocol.Channel.TRUST)
        assert [t for t in probe.received if t != own_trust] == []
        events = await fleet.api.get(
            "/v1/events",
            token=fleet.world.tokens["partner_admin"],
            params={"device_id": victim["id"]},
        )
        assert str(forged.event_id) not in [e["event_id"] for e in events.json()["items"]]
        assert (await fleet.read(victim["id"]))["online"] is True
    finally:
        await probe.close()


async def test_provisioning_shows_the_secret_once_and_stores_a_hash(fleet: Fleet) -> None:
    device = await fleet.provision("door_lock")
    mqtt = device["credentials"]["mqtt"]
    assert mqtt["username"] == mqtt["client_id"] == device["id"]
    assert mqtt["topic_prefix"] == f"sesame/v1/devices/{device['id']}"
    again = await fleet.read(device["id"])
    assert "credentials" not in again
    assert again["actions"] == ["lock", "ping", "remove_pin", "set_pin", "sync_clock", "unlock"]
    assert "pin_codes" in again["features"]
    async with fleet.runtime.read_session_factory() as session:
        stored = (
            await session.execute(
                select(Device.credential_hash).where(Device.id == uuid.UUID(device["id"]))
            )
        ).scalar_one()
    assert stored.startswith("$7$101$")
    assert mqtt["password"] not in stored


async def test_rotation_locks_out_the_old_secret_and_drops_the_session(
    fleet: Fleet, broker_kind: str
) -> None:
    device, sim = await fleet.run("entrance_reader")
    old = device["credentials"]["mqtt"]
    response = await fleet.api.post(
        f"/v1/devices/{device['id']}/credentials/rotate", token=fleet.world.tokens["partner_admin"]
    )
    assert response.status_code == 200
    new = response.json()["mqtt"]
    assert new["password"] != old["password"]
    if broker_kind == "embedded":
        await fleet.wait_for(lambda d: not d["online"], device["id"])
    await sim.crash()
    stale = Probe(broker_url(device), old["client_id"], old["username"], old["password"])
    for _ in range(40):  # Mosquitto reloads its password file asynchronously
        if not await stale.connect():
            break
        await stale.close()
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the old secret still works")
    fresh = dict(device, credentials={"mqtt": new})
    await fleet.start(fleet.simulator(fresh))


async def test_decommissioned_devices_cannot_connect_or_be_commanded(fleet: Fleet) -> None:
    device, sim = await fleet.run("entrance_reader")
    token = fleet.world.tokens["partner_admin"]
    assert (await fleet.api.delete(f"/v1/devices/{device['id']}", token=token)).status_code == 204
    gone = await fleet.read(device["id"])
    assert gone["status"] == "decommissioned"
    assert [e["code"] for e in gone["errors"]] == ["device_decommissioned"]
    command = await fleet.api.post(
        f"/v1/devices/{device['id']}/commands", token=token, json={"action": "open"}
    )
    assert command.status_code == 409
    await sim.crash()
    mqtt = device["credentials"]["mqtt"]
    probe = Probe(broker_url(device), mqtt["client_id"], mqtt["username"], mqtt["password"])
    for _ in range(40):
        if not await probe.connect():
            break
        await probe.close()
        await asyncio.sleep(0.1)
    else:
        pytest.fail("a decommissioned device still connects")


async def test_revoked_credentials_keep_the_device_out_until_rotated(fleet: Fleet) -> None:
    device, sim = await fleet.run("door_lock")
    response = await fleet.api.post(
        f"/v1/devices/{device['id']}/credentials/revoke", token=fleet.world.tokens["partner_admin"]
    )
    assert response.status_code == 200
    assert response.json()["online"] is False
    await sim.crash()
    mqtt = device["credentials"]["mqtt"]
    probe = Probe(broker_url(device), mqtt["client_id"], mqtt["username"], mqtt["password"])
    for _ in range(40):
        if not await probe.connect():
            break
        await probe.close()
        await asyncio.sleep(0.1)
    else:
        pytest.fail("revoked credentials still connect")


async def test_devices_are_placed_in_their_own_site(fleet: Fleet) -> None:
    response = await fleet.api.post(
        "/v1/devices",
        token=fleet.world.tokens["partner_admin"],
        json={
            "site_id": fleet.world.site_id,
            "kind": "door_lock",
            "name": "misplaced",
            "unit_id": fleet.world.other_site_ids["unit"],
        },
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == ["body", "unit_id"]


async def test_site_staff_see_only_their_sites_devices(fleet: Fleet) -> None:
    mine = await fleet.provision("entrance_reader")
    theirs = await fleet.provision("entrance_reader", entrance=None, site=fleet.world.other_site_id)
    token = fleet.world.tokens["installer"]
    listed = await fleet.api.get("/v1/devices", token=token)
    ids = {d["id"] for d in listed.json()["items"]}
    assert mine["id"] in ids
    assert theirs["id"] not in ids
    assert (await fleet.api.get(f"/v1/devices/{theirs['id']}", token=token)).status_code == 404
