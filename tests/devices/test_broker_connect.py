"""What a CONNECT may do on both brokers: its will is held to the publish rules, a refused
one changes nothing, and a client id belongs to the credentials it was issued with."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from sqlalchemy import select

from sesame.devices import protocol
from sesame.models import OutboxMessage
from sesame.notifications import triggers
from sesame.notifications.repository import NotificationRepository
from sesame.simulators import SimulatedDevice
from tests.device_fixtures import Fleet
from tests.support import World


class _OneShotClient(gmqtt.Client):
    """Never reconnects (gmqtt's ``reconnect_retries: 0`` still allows one attempt)."""

    async def reconnect(self, delay: bool = False) -> None:
        return


class RawClient:
    """An MQTT client that does what a rogue one would: any client id, any will, and a
    socket dropped without DISCONNECT."""

    def __init__(
        self,
        url: str,
        client_id: str,
        username: str,
        password: str,
        *,
        will: gmqtt.Message | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.client = _OneShotClient(client_id, clean_session=True, will_message=will)
        self.client.set_auth_credentials(username, password)
        self.granted: list[Any] = []
        self.client.on_subscribe = lambda client, mid, qos, props: self.granted.append(qos)

    async def connect(self, version: int = MQTTv311) -> bool:
        try:
            await asyncio.wait_for(
                self.client.connect(self.host, self.port, keepalive=30, version=version), 5
            )
        except Exception:
            return False
        return bool(self.client.is_connected)

    def drop(self) -> None:
        """Lose the connection the way a power cut does: no DISCONNECT, so the broker
        owes the will."""
        transport = getattr(getattr(self.client, "_connection", None), "_transport", None)
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        if self.client.is_connected:
            await self.client.disconnect()


def mqtt_of(device: dict[str, Any]) -> dict[str, Any]:
    credentials: dict[str, Any] = device["credentials"]["mqtt"]
    return credentials


def watch_disconnects(sim: SimulatedDevice) -> list[int]:
    """Count the simulator's disconnections (it reconnects by itself, which would hide
    one from a test that only looks at the outcome)."""
    seen: list[int] = []
    client = sim._client
    assert client is not None
    original = client.on_disconnect

    def counted(*args: Any, **kwargs: Any) -> None:
        seen.append(1)
        original(*args, **kwargs)

    client.on_disconnect = counted
    return seen


def watch_gateway_disconnects(fleet: Fleet) -> list[int]:
    gateway = fleet.runtime.gateway
    assert gateway is not None
    seen: list[int] = []
    original = gateway._client.on_disconnect

    def counted(*args: Any, **kwargs: Any) -> None:
        seen.append(1)
        original(*args, **kwargs)

    gateway._client.on_disconnect = counted
    return seen


async def command(fleet: Fleet, device_id: str, action: str = "ping") -> dict[str, Any]:
    response = await fleet.api.post(
        f"/v1/devices/{device_id}/commands",
        params={"wait": 5},
        token=fleet.world.tokens["partner_admin"],
        json={"action": action},
    )
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def intruder(fleet: Fleet, other_dworld: World) -> Any:
    """Partner B's reader, provisioned and known to the broker but not connected: its
    credentials are the attacker's."""
    theirs = Fleet(fleet.api, other_dworld, fleet.runtime)
    device = await theirs.provision("entrance_reader", entrance=None)
    await theirs.start(theirs.simulator(device), online=True)
    await theirs.devices.pop().stop()  # free its client id for the raw client
    yield theirs, device
    await theirs.close()


def forged_will(victim_id: str, channel: protocol.Channel, now: datetime) -> gmqtt.Message:
    message: protocol.Message
    if channel is protocol.Channel.COMMANDS:
        message = protocol.Command(
            command_id=uuid.uuid4(),
            action="unlock",
            issued_at=now,
            expires_at=now + timedelta(minutes=5),
        )
    elif channel is protocol.Channel.EVENTS:
        message = protocol.DeviceEvent(event_id=uuid.uuid4(), type="doorbell_rang", occurred_at=now)
    else:
        message = protocol.Presence(online=False, boot_id="forged")
    return gmqtt.Message(
        protocol.topic(victim_id, channel), protocol.encode(message), qos=1, retain=True
    )


@pytest.mark.parametrize(
    ("kind", "channel"),
    [
        ("door_lock", protocol.Channel.COMMANDS),  # another tenant's lock told to unlock
        ("doorbell", protocol.Channel.EVENTS),  # a doorbell ring that never happened
        ("entrance_reader", protocol.Channel.STATUS),  # a reader marked offline, retained
    ],
)
async def test_a_will_on_another_devices_topic_never_reaches_it(
    fleet: Fleet, intruder: Any, broker_kind: str, kind: str, channel: protocol.Channel
) -> None:
    """The will in CONNECT obeys the publish rules: the embedded broker refuses the
    connection; Mosquitto accepts it and drops the will when it would send it. Either way
    the victim hears nothing, and nothing is stored or shown for it."""
    victim, victim_sim = await fleet.run(kind)
    theirs, device = intruder
    mqtt = mqtt_of(device)
    will = forged_will(victim["id"], channel, datetime.now(UTC))
    rogue = RawClient(mqtt["url"], mqtt["client_id"], mqtt["username"], mqtt["password"], will=will)
    accepted = await rogue.connect()
    assert accepted is (broker_kind == "mosquitto")
    rogue.drop()
    # The intruder's own device comes back under the same client id: by its CONNACK the
    # broker has ended the dropped connection, and sent (or dropped) its will.
    await theirs.start(theirs.simulator(device))

    # A real command goes through, after anything the broker delivered before it.
    assert (await command(fleet, victim["id"]))["status"] == "success"
    assert [e.action for e in victim_sim.executed] == ["ping"]
    shown = await fleet.read(victim["id"])
    assert shown["online"] is True
    assert shown["errors"] == []
    events = await fleet.api.get(
        "/v1/events", token=fleet.world.tokens["partner_admin"], params={"device_id": victim["id"]}
    )
    assert [e["type"] for e in events.json()["items"] if e["type"] == "doorbell_rang"] == []
    # Nothing was retained for the victim either: it reconnects and still acts only on
    # what the platform sends.
    await victim_sim.stop()
    await fleet.wait_for(lambda d: not d["online"], victim["id"])
    restarted = await fleet.start(fleet.simulator(victim))
    assert (await command(fleet, victim["id"]))["status"] == "success"
    assert [e.action for e in restarted.executed] == ["ping"]


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def raw_connect(
    client_id: str, username: str, password: str, *, flags: int, will_topic: str | None
) -> bytes:
    """An MQTT 3.1.1 CONNECT with the will flags exactly as given (0x20 retain, 0x18
    QoS, 0x04 will) — what no well-behaved library would send."""
    payload = _field(client_id.encode())
    if will_topic is not None:
        will = protocol.encode(protocol.Presence(online=False, boot_id="raw"))
        payload += _field(will_topic.encode()) + _field(will)
    payload += _field(username.encode()) + _field(password.encode())
    variable = _field(b"MQTT") + bytes([4, 0x80 | 0x40 | 0x02 | flags]) + (30).to_bytes(2, "big")
    body = variable + payload
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return b"\x10" + encoded + body


async def connack_code(url: str, packet: bytes) -> int | None:
    """The CONNACK return code, or None if the broker closed the connection instead."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(packet)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4), 5)
    finally:
        writer.close()
    return answer[3] if len(answer) == 4 and answer[0] == 0x20 else None


async def test_a_wills_qos_and_retain_flags_are_held_to_the_rules(
    fleet: Fleet, broker_kind: str
) -> None:
    """Will flags without a will, a will at QoS 3 and a will on a wildcard topic are
    refused (the embedded broker answers 0x05, Mosquitto closes the connection); the will
    the protocol asks for, retained at QoS 1 on the device's own status, is accepted."""
    device = await fleet.provision("entrance_reader", entrance=None)
    await fleet.start(fleet.simulator(device), online=False)
    await fleet.devices.pop().stop()
    mqtt = mqtt_of(device)
    status = protocol.topic(device["id"], protocol.Channel.STATUS)
    refused = {
        "retain without a will": (0x20, None),
        "QoS without a will": (0x08, None),
        "QoS 3": (0x04 | 0x18, status),
        "wildcard topic": (0x04 | 0x08, f"{protocol.TOPIC_ROOT}/{device['id']}/#"),
    }
    for label, (flags, topic) in refused.items():
        packet = raw_connect(
            mqtt["client_id"], mqtt["username"], mqtt["password"], flags=flags, will_topic=topic
        )
        expected = 0x05 if broker_kind == "embedded" else None
        assert await connack_code(mqtt["url"], packet) == expected, label
    packet = raw_connect(
        mqtt["client_id"],
        mqtt["username"],
        mqtt["password"],
        flags=0x04 | 0x08 | 0x20,
        will_topic=status,
    )
    assert await connack_code(mqtt["url"], packet) == 0


async def test_a_will_on_the_devices_own_status_is_accepted(fleet: Fleet) -> None:
    """The will the protocol asks for still works: dropped without a goodbye, the device
    is shown offline by its own will."""
    device, sim = await fleet.run("entrance_reader")
    await sim.crash()
    await fleet.wait_for(lambda d: not d["online"], device["id"])


async def test_a_refused_connect_leaves_the_live_session_alone(
    fleet: Fleet, broker_kind: str
) -> None:
    """Someone who knows a device's id (it is in the ledger), or the gateway's client id,
    connects with it and a wrong password: refused, and the real device and the gateway
    go on receiving commands on the connections they had."""
    device, sim = await fleet.run("door_lock")
    device_drops = watch_disconnects(sim)
    gateway_drops = watch_gateway_disconnects(fleet)
    mqtt = mqtt_of(device)
    gateway = fleet.runtime.gateway
    assert gateway is not None
    for client_id, username in (
        (mqtt["client_id"], mqtt["username"]),
        (gateway._client._client_id, protocol.GATEWAY_USERNAME),
    ):
        for _ in range(3):
            rogue = RawClient(fleet.runtime.settings.broker_url, client_id, username, "wrong")
            assert not await rogue.connect()
        assert (await command(fleet, device["id"], "unlock"))["status"] == "success"
    assert [e.action for e in sim.executed] == ["unlock", "unlock"]
    assert device_drops == []
    assert gateway_drops == []
    assert (await fleet.read(device["id"]))["online"] is True


async def test_an_accepted_reconnect_by_the_same_device_takes_its_session_over(
    fleet: Fleet,
) -> None:
    """The only thing that replaces a live session: the same device connecting again
    (a restart the broker has not noticed). The new session receives the commands."""
    device, old = await fleet.run("door_lock")
    await old.hang()
    new = await fleet.start(fleet.simulator(device))
    assert (await command(fleet, device["id"], "unlock"))["status"] == "success"
    assert [e.action for e in new.executed] == ["unlock"]
    assert old.executed == []
    shown = await fleet.wait_for(lambda d: d["online"], device["id"])
    assert shown["online"] is True


async def test_valid_credentials_cannot_take_another_client_id(
    fleet: Fleet, intruder: Any, broker_kind: str
) -> None:
    """A device of another partner, signed in with its own credentials, asks for the
    victim's client id, then for the gateway's: the embedded broker refuses it; Mosquitto
    gives it its own id instead. Neither the victim nor the gateway loses its session,
    however often it is tried."""
    victim, victim_sim = await fleet.run("door_lock")
    victim_drops = watch_disconnects(victim_sim)
    gateway_drops = watch_gateway_disconnects(fleet)
    gateway = fleet.runtime.gateway
    assert gateway is not None
    _, device = intruder
    mqtt = mqtt_of(device)
    for client_id in (victim["id"], gateway._client._client_id):
        for _ in range(5):
            rogue = RawClient(mqtt["url"], client_id, mqtt["username"], mqtt["password"])
            assert await rogue.connect() is (broker_kind == "mosquitto")
            await rogue.close()
        assert (await command(fleet, victim["id"], "unlock"))["status"] == "success"
    assert [e.action for e in victim_sim.executed] == ["unlock", "unlock"]
    assert victim_drops == []
    assert gateway_drops == []


@pytest.mark.parametrize("version", [MQTTv311, MQTTv50])
async def test_what_a_subscription_outside_a_devices_channels_gets(
    fleet: Fleet, broker_kind: str, version: int
) -> None:
    """The embedded broker refuses it in SUBACK (0x80; 0x87 has no MQTT 3.1.1 form and
    amqtt speaks 3.1.1 only); Mosquitto with an ACL file grants it and delivers nothing
    through it (``docs/protocol.md``, section 2)."""
    victim, _ = await fleet.run("door_lock")
    device = await fleet.provision("entrance_reader", entrance=None)
    await fleet.start(fleet.simulator(device), online=False)
    await fleet.devices.pop().stop()
    mqtt = mqtt_of(device)
    probe = RawClient(mqtt["url"], mqtt["client_id"], mqtt["username"], mqtt["password"])
    connected = await probe.connect(version)
    if broker_kind == "embedded" and version == MQTTv50:
        assert not connected  # amqtt answers MQTT 5 with "unacceptable protocol version"
        return
    assert connected
    try:
        for topic_filter in ("#", protocol.topic(victim["id"], protocol.Channel.COMMANDS)):
            probe.client.subscribe(topic_filter, qos=1)
        probe.client.subscribe(protocol.topic(device["id"], protocol.Channel.COMMANDS), qos=1)
        for _ in range(100):
            if len(probe.granted) == 3:
                break
            await asyncio.sleep(0.05)
        refused = 0x80 if version == MQTTv311 else 0x87
        foreign = [1, 1] if broker_kind == "mosquitto" else [refused, refused]
        assert [codes[0] for codes in probe.granted] == [*foreign, 1]
    finally:
        await probe.close()


async def test_a_result_for_a_command_never_sent_alerts_the_sites_managers(
    fleet: Fleet,
) -> None:
    """A result the platform can match to no command it sent this device means someone
    else commanded it, or speaks for it: an ``unexpected_result`` error on the device and
    one alert to its site's managers, however many gateways hear it; a late repeat of a
    real result is none of that. New credentials clear the error."""
    device, sim = await fleet.run("door_lock")
    done = await command(fleet, device["id"], "unlock")
    assert done["status"] == "success"
    known = sim.results[uuid.UUID(done["id"])]
    sim._publish(protocol.Channel.RESULTS, known)  # a late repeat: not a security event
    stranger = protocol.CommandResult(
        command_id=uuid.uuid4(),
        outcome=protocol.Outcome.SUCCEEDED,
        completed_at=datetime.now(UTC),
    )
    for _ in range(2):  # the device resends it; one alert still
        sim._publish(protocol.Channel.RESULTS, stranger)
    flagged = await fleet.wait_for(
        lambda d: "unexpected_result" in [e["code"] for e in d["errors"]], device["id"]
    )
    assert [e["code"] for e in flagged["errors"]] == ["unexpected_result"]
    # Both copies were handled once the device's next real result is in.
    assert (await command(fleet, device["id"], "lock"))["status"] == "success"
    async with fleet.runtime.read_session_factory() as session:
        rows = (
            (
                await session.execute(
                    select(OutboxMessage).where(
                        OutboxMessage.topic == "device.unexpected_result",
                        OutboxMessage.aggregate_id == uuid.UUID(device["id"]),
                    )
                )
            )
            .scalars()
            .all()
        )
        assert [row.payload["command_id"] for row in rows] == [str(stranger.command_id)]
        [intent] = await triggers.intents_for(
            NotificationRepository(session), rows[0], datetime.now(UTC).date()
        )
    assert intent.category == "security"
    managers = {r.id for r in intent.recipients}
    assert uuid.UUID(fleet.world.staff["site_manager"]["id"]) in managers

    rotated = await fleet.api.post(
        f"/v1/devices/{device['id']}/credentials/rotate",
        token=fleet.world.tokens["partner_admin"],
    )
    assert rotated.status_code == 200
    # Rotating drops the device's session, so it may already show as offline; the
    # unexpected-result error is gone either way.
    errors = [e["code"] for e in (await fleet.read(device["id"]))["errors"]]
    assert "unexpected_result" not in errors
    assert set(errors) <= {"device_offline"}
