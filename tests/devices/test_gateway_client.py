"""The gateway's MQTT client writes the acknowledgements of one event-loop turn at once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gmqtt.mqtt.constants import MQTTCommands, MQTTv311
from gmqtt.mqtt.package import CommandWithMidPacket

from sesame.devices.gateway import _JitteredClient


@dataclass
class Protocol:
    proto_ver: int = MQTTv311
    writes: list[bytes] = field(default_factory=list)

    def write_data(self, data: bytes) -> None:
        self.writes.append(data)


@dataclass
class Connection:
    _protocol: Protocol = field(default_factory=Protocol)


def puback(mid: int) -> bytes:
    return CommandWithMidPacket.build_package(MQTTCommands.PUBACK, mid, False, proto_ver=MQTTv311)


async def test_acknowledgements_of_one_turn_go_out_in_one_write_in_order() -> None:
    client = _JitteredClient("test-client")
    connection = Connection()
    client._connection = connection
    for mid in (7, 8, 9):
        client._send_command_with_mid(MQTTCommands.PUBACK, mid, False)
    assert connection._protocol.writes == []  # not yet: the turn is not over
    await asyncio.sleep(0)
    assert connection._protocol.writes == [puback(7) + puback(8) + puback(9)]
    client._send_command_with_mid(MQTTCommands.PUBACK, 10, False)
    await asyncio.sleep(0)
    assert connection._protocol.writes[1:] == [puback(10)]


async def test_acknowledgements_for_a_connection_that_is_gone_are_dropped() -> None:
    """Packet ids belong to a connection: after a reconnection they would acknowledge
    messages the broker never sent on the new one."""
    client = _JitteredClient("test-client")
    old, new = Connection(), Connection()
    client._connection = old
    client._send_command_with_mid(MQTTCommands.PUBACK, 1, False)
    client._connection = new
    await asyncio.sleep(0)
    client._send_command_with_mid(MQTTCommands.PUBACK, 2, False)
    await asyncio.sleep(0)
    assert old._protocol.writes == []
    assert new._protocol.writes == [puback(2)]
