"""What a device sends is bounded: in size by the broker and the gateway, in time by the
server's clock; an event refused for good is acknowledged, so it is not resent forever."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from prometheus_client import REGISTRY

from sesame.devices import protocol
from tests.device_fixtures import Fleet
from tests.devices.test_broker_and_provisioning import Probe, broker_url
from tests.support import eventually


class RawDevice:
    """A device speaking raw MQTT with its own credentials, to send what no simulator
    would; it records the acknowledgements the gateway sends it."""

    def __init__(self, fleet: Fleet, device: dict[str, Any]) -> None:
        mqtt = device["credentials"]["mqtt"]
        self.fleet = fleet
        self.device_id = device["id"]
        self.probe = Probe(
            broker_url(device), mqtt["client_id"], mqtt["username"], mqtt["password"]
        )
        self.acks: list[protocol.EventsAck] = []
        self.probe.client.on_message = self._on_message

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        message = protocol.decode(protocol.Channel.EVENTS_ACK, payload)
        assert isinstance(message, protocol.EventsAck)
        self.acks.append(message)
        return 0

    async def connect(self) -> None:
        for _ in range(40):  # a reloading Mosquitto learns new credentials shortly
            if await self.probe.connect():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the device could not connect")
        self.probe.client.subscribe(
            protocol.topic(self.device_id, protocol.Channel.EVENTS_ACK), qos=1
        )
        await asyncio.sleep(0.2)  # SUBACK

    def send(self, body: dict[str, Any] | bytes) -> None:
        payload = body if isinstance(body, bytes) else orjson.dumps(body)
        self.probe.client.publish(
            protocol.topic(self.device_id, protocol.Channel.EVENTS), payload, qos=1
        )

    def event(self, **fields: Any) -> dict[str, Any]:
        return {
            "v": 1,
            "event_id": str(uuid.uuid4()),
            "type": "door_forced",
            "occurred_at": self.fleet.runtime.clock.now().isoformat(),
            **fields,
        }

    async def acknowledgement(self, event_id: str) -> protocol.EventsAck:
        wanted = uuid.UUID(event_id)
        await eventually(lambda: any(wanted in ack.event_ids for ack in self.acks))
        return next(ack for ack in self.acks if wanted in ack.event_ids)

    async def stored_ids(self) -> set[str]:
        response = await self.fleet.api.get(
            "/v1/events",
            token=self.fleet.world.tokens["partner_admin"],
            params={"device_id": self.device_id, "limit": 200},
        )
        assert response.status_code == 200
        return {item["event_id"] for item in response.json()["items"]}


async def raw_device(fleet: Fleet) -> RawDevice:
    device = await fleet.provision("entrance_reader", entrance=None)
    await fleet.start(fleet.simulator(device), online=False)  # the broker knows it now
    await fleet.devices.pop().stop()  # free the client id for the raw client
    raw = RawDevice(fleet, device)
    await raw.connect()
    return raw


def protocol_errors() -> float:
    value = REGISTRY.get_sample_value(
        "sesame_mqtt_protocol_errors_total", {"channel": protocol.Channel.EVENTS.value}
    )
    return value or 0.0


async def test_an_event_dated_far_from_the_server_clock_is_refused_and_acknowledged(
    fleet: Fleet,
) -> None:
    raw = await raw_device(fleet)
    try:
        year_one = raw.event(occurred_at="0001-01-01T00:00:00Z")
        epoch = raw.event(occurred_at="1970-01-01T00:00:00+00:00")
        overflowing = raw.event(occurred_at="0001-01-01T00:00:00+05:00")
        unparseable = raw.event(occurred_at="yesterday")
        good = raw.event()
        for event in (year_one, epoch, overflowing, unparseable, good):
            raw.send(event)
        for event, reason in (
            (year_one, "occurred_at_out_of_range"),
            (epoch, "occurred_at_out_of_range"),
            (overflowing, "occurred_at_out_of_range"),
            (unparseable, "invalid"),
        ):
            ack = await raw.acknowledgement(event["event_id"])
            assert [(str(r.event_id), r.reason) for r in ack.refused] == [
                (event["event_id"], reason)
            ]
        assert (await raw.acknowledgement(good["event_id"])).refused == []
        # Refused events are never queued for storing; the good one, sent last, is stored.
        assert await raw.stored_ids() == {good["event_id"]}
    finally:
        await raw.probe.close()


async def test_an_access_decision_without_a_documented_method_is_refused(fleet: Fleet) -> None:
    """The platform does not guess how a door was opened: an ``access_granted`` or
    ``access_denied`` whose ``method`` is missing or not an ``AccessMethod`` is refused,
    with its reason, and nothing of it reaches the events or the access log."""
    raw = await raw_device(fleet)
    try:
        odd = raw.event(type="access_granted", data={"method": "telepathy"})
        missing = raw.event(type="access_denied", data={"reason": "replayed"})
        numeric = raw.event(type="access_granted", data={"method": 7})
        known = raw.event(type="access_denied", data={"method": "qr", "reason": "replayed"})
        for event in (odd, missing, numeric, known):
            raw.send(event)
        for event in (odd, missing, numeric):
            ack = await raw.acknowledgement(event["event_id"])
            assert [(str(r.event_id), r.reason) for r in ack.refused] == [
                (event["event_id"], "unknown_access_method")
            ]
        assert (await raw.acknowledgement(known["event_id"])).refused == []
        assert await raw.stored_ids() == {known["event_id"]}
        log = await fleet.api.get(
            "/v1/access-events",
            token=fleet.world.tokens["partner_admin"],
            params={"device_id": raw.device_id},
        )
        assert [(e["method"], e["reason"]) for e in log.json()["items"]] == [("qr", "replayed")]
    finally:
        await raw.probe.close()


async def test_an_event_with_oversized_or_unstorable_data_is_refused(fleet: Fleet) -> None:
    raw = await raw_device(fleet)
    try:
        bulky = raw.event(data={"blob": "x" * (protocol.MAX_DATA_BYTES + 1)})
        nul = raw.event(data={"note": "a\u0000b"})
        for event in (bulky, nul):
            raw.send(event)
            ack = await raw.acknowledgement(event["event_id"])
            assert [r.reason for r in ack.refused] == ["invalid"]
        assert await raw.stored_ids() == set()
    finally:
        await raw.probe.close()


async def test_a_message_past_the_device_limit_is_dropped_unread(fleet: Fleet) -> None:
    raw = await raw_device(fleet)
    try:
        before = protocol_errors()
        large = raw.event(data={"blob": "x" * protocol.MAX_DEVICE_MESSAGE_BYTES})
        raw.send(large)
        await eventually(lambda: protocol_errors() > before)
        assert raw.probe.client.is_connected  # under the broker's limit: only dropped
        assert await raw.stored_ids() == set()
    finally:
        await raw.probe.close()


async def test_a_packet_past_the_broker_limit_disconnects_the_device(fleet: Fleet) -> None:
    raw = await raw_device(fleet)
    try:
        limit = fleet.runtime.settings.mqtt_max_packet_bytes
        huge = raw.event(data={"blob": "x" * (limit + 1)})
        raw.send(huge)
        await eventually(lambda: not raw.probe.client.is_connected)
        # Connected again, the device's next event is stored; the huge one never was.
        raw.acks.clear()
        await raw.connect()
        good = raw.event()
        raw.send(good)
        await raw.acknowledgement(good["event_id"])
        assert await raw.stored_ids() == {good["event_id"]}
    finally:
        await raw.probe.close()
