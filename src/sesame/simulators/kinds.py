"""One simulator per device kind, each with the behaviour of the real thing."""

from __future__ import annotations

import asyncio
from typing import Any

from sesame.devices import protocol
from sesame.keys.reader import Decision, Reader
from sesame.kit.logging import get_logger
from sesame.models import DeviceKind
from sesame.simulators.device import Relay, SimulatedDevice

log = get_logger("sesame.simulator")

Outcome = protocol.Outcome
Code = protocol.ErrorCode


class EntranceReaderSim(SimulatedDevice):
    """A common-entrance reader with a door-release relay and a door sensor.

    It admits mobile credentials and QR passes on its own (``present``), with the trust
    document it was last sent, so it keeps working while the server or broker is down.
    """

    kind = DeviceKind.ENTRANCE_READER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.relay = Relay()
        self._reader = Reader()  # no trust yet: it refuses everything

    def on_trust(self, document: protocol.TrustDocument) -> None:
        super().on_trust(document)
        self._reader.update(document)

    def present(self, token: str, *, method: str = "mobile_credential") -> Decision:
        """A phone or a QR code is held to the reader: decide alone, log it, open or not."""
        decision = self._reader.decide(token, self.clock.now().timestamp())
        claims = decision.claims
        data = {
            "method": method,
            "key_id": claims.get("key"),
            "credential_id": claims.get("jti"),
            "reason": None if decision.granted else decision.reason,
        }
        if decision.granted:
            self.relay.pulse(3)
            self.emit(protocol.EventType.ACCESS_GRANTED, **data)
        else:
            self.emit(protocol.EventType.ACCESS_DENIED, **data)
        return decision

    async def execute(self, command: protocol.Command) -> protocol.CommandResult:
        if command.action != "open":
            return await super().execute(command)
        seconds = int(command.params.get("duration_s", 5))
        self.relay.pulse(seconds)
        log.info("simulated_door_released", device_id=self.device_id, seconds=seconds)
        self.emit(
            protocol.EventType.ACCESS_GRANTED, method="remote", command_id=str(command.command_id)
        )
        self.publish_state()
        return self._result(
            command, Outcome.SUCCEEDED, confirmed=True, data={"relay_seconds": seconds}
        )

    def state(self) -> protocol.ReportedState:
        return (
            super()
            .state()
            .model_copy(update={"relay_on": self.relay.on, "door": protocol.DoorState.CLOSED})
        )


class DoorLockSim(SimulatedDevice):
    """A unit door lock: a bolt, a keypad and a table of PIN slots."""

    kind = DeviceKind.DOOR_LOCK

    def __init__(
        self,
        *args: Any,
        slots: int = 20,
        jammed: bool = False,
        lengths: tuple[int, int] = (4, 8),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.bolt = protocol.BoltState.LOCKED
        self.slots: dict[int, str] = {}
        self.keypad_slots: set[int] = set()
        self.slot_count = slots
        self.lengths = lengths
        self.jammed = jammed

    async def execute(self, command: protocol.Command) -> protocol.CommandResult:
        if command.action == "set_pin":
            return self._set_pin(command, int(command.params["slot"]), str(command.params["code"]))
        if command.action == "remove_pin":
            self.slots.pop(int(command.params["slot"]), None)
            return self._result(command, Outcome.SUCCEEDED, confirmed=True)
        if command.action not in ("lock", "unlock"):
            return await super().execute(command)
        if self.jammed:
            self.emit(protocol.EventType.LOCK_JAMMED)
            return self._result(command, Outcome.FAILED, Code.JAMMED, "the bolt did not move")
        self.bolt = (
            protocol.BoltState.LOCKED if command.action == "lock" else protocol.BoltState.UNLOCKED
        )
        self.emit(
            protocol.EventType.LOCKED if command.action == "lock" else protocol.EventType.UNLOCKED,
            method="remote",
        )
        self.publish_state()
        return self._result(
            command, Outcome.SUCCEEDED, confirmed=True, data={"bolt": self.bolt.value}
        )

    def _set_pin(self, command: protocol.Command, slot: int, code: str) -> protocol.CommandResult:
        if slot > self.slot_count:
            return self._result(command, Outcome.REJECTED, Code.NO_SPACE, "no such slot")
        low, high = self.lengths
        if not low <= len(code) <= high or len(set(code)) == 1:
            return self._result(
                command, Outcome.REJECTED, Code.CONSTRAINTS_VIOLATED, "the lock refuses this code"
            )
        if any(existing == code and other != slot for other, existing in self.slots.items()):
            return self._result(
                command, Outcome.REJECTED, Code.DUPLICATE_CODE, "the code is in another slot"
            )
        if slot in self.slots and self.slots[slot] != code and slot in self.keypad_slots:
            return self._result(command, Outcome.REJECTED, Code.NO_SPACE, "slot in use")
        self.slots[slot] = code
        return self._result(command, Outcome.SUCCEEDED, confirmed=True, data={"slot": slot})

    def program_at_keypad(self, slot: int, code: str | None) -> protocol.DeviceEvent:
        """Someone changes a slot at the lock itself, behind the platform's back."""
        if code is None:
            self.slots.pop(slot, None)
        else:
            self.slots[slot] = code
            self.keypad_slots.add(slot)
        return self.emit(
            "pin_changed", slot=slot, source="keypad", change="removed" if code is None else "set"
        )

    def enter_code(self, code: str) -> protocol.DeviceEvent:
        """Someone types a code on the keypad."""
        slot = next((s for s, pin in self.slots.items() if pin == code), None)
        if slot is None:
            return self.emit(protocol.EventType.ACCESS_DENIED, method="pin")
        self.bolt = protocol.BoltState.UNLOCKED
        self.publish_state()
        return self.emit(protocol.EventType.ACCESS_GRANTED, method="pin", slot=slot)

    def state(self) -> protocol.ReportedState:
        constraints = {
            "lengths": list(self.lengths),
            "slots": self.slot_count,
            "forbid": ["repeated", "sequential"],
        }
        return (
            super()
            .state()
            .model_copy(
                update={
                    "bolt": self.bolt,
                    "door": protocol.DoorState.CLOSED,
                    "extra": {"pin_constraints": constraints},
                }
            )
        )


class DoorbellSim(SimulatedDevice):
    """A doorbell station with a door release."""

    kind = DeviceKind.DOORBELL

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.relay = Relay()

    def ring(self) -> protocol.DeviceEvent:
        return self.emit(protocol.EventType.DOORBELL_RANG)

    async def execute(self, command: protocol.Command) -> protocol.CommandResult:
        if command.action != "open":
            return await super().execute(command)
        self.relay.pulse(int(command.params.get("duration_s", 5)))
        return self._result(command, Outcome.SUCCEEDED, confirmed=True)


class ZwaveHubSim(SimulatedDevice):
    """A Z-Wave hub in a stay, driving locks addressed by node id.

    Like real Z-Wave, an unsupervised lock's answer only says the hub sent the frame:
    ``succeeded`` without ``confirmed``.
    """

    kind = DeviceKind.ZWAVE_HUB

    def __init__(
        self,
        *args: Any,
        nodes: tuple[int, ...] = (2, 3, 4),
        supervised: tuple[int, ...] = (2, 3),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.locks = dict.fromkeys(nodes, protocol.BoltState.LOCKED)
        self.supervised = set(supervised)

    async def execute(self, command: protocol.Command) -> protocol.CommandResult:
        if command.action not in ("lock", "unlock"):
            return await super().execute(command)
        node = int(command.params.get("node_id", 0))
        if node not in self.locks:
            return self._result(
                command, Outcome.REJECTED, Code.INVALID_PARAMS, f"no lock at node {node}"
            )
        await asyncio.sleep(0.01)  # a radio round trip
        self.locks[node] = (
            protocol.BoltState.LOCKED if command.action == "lock" else protocol.BoltState.UNLOCKED
        )
        return self._result(
            command, Outcome.SUCCEEDED, confirmed=node in self.supervised, data={"node_id": node}
        )


class ElevatorAgentSim(SimulatedDevice):
    """An on-site agent in front of the elevator group's monitor server."""

    kind = DeviceKind.ELEVATOR_AGENT

    def __init__(
        self, *args: Any, floors: tuple[int, int] = (-2, 20), mode: str = "normal", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.floors = floors
        self.mode = mode
        self.calls: list[int] = []

    async def execute(self, command: protocol.Command) -> protocol.CommandResult:
        if command.action != "call":
            return await super().execute(command)
        floor = int(command.params["floor"])
        if self.mode != "normal":
            return self._result(
                command, Outcome.REJECTED, Code.NOT_PERMITTED, f"the group is in {self.mode} mode"
            )
        if not self.floors[0] <= floor <= self.floors[1] or floor == 0:
            return self._result(command, Outcome.REJECTED, Code.INVALID_PARAMS, f"no floor {floor}")
        self.calls.append(floor)
        asyncio.get_running_loop().call_later(
            0.05, lambda: self.emit(protocol.EventType.ELEVATOR_ARRIVED, floor=floor)
        )
        return self._result(
            command, Outcome.SUCCEEDED, confirmed=True, data={"car": "A", "eta_s": 12}
        )


SIMULATORS: dict[DeviceKind, type[SimulatedDevice]] = {
    sim.kind: sim
    for sim in (EntranceReaderSim, DoorLockSim, DoorbellSim, ZwaveHubSim, ElevatorAgentSim)
}
