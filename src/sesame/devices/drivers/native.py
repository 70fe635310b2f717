"""Drivers for devices that speak the Sesame protocol natively (and for the simulators)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from sesame.devices.drivers.base import ActionSpec, DeviceDriver, Feature, NoParams, Params
from sesame.models import DeviceKind


class OpenParams(Params):
    duration_s: int = Field(5, ge=1, le=30, description="How long the relay stays released.")


class ChildParams(Params):
    node_id: int = Field(ge=1, le=232, description="Z-Wave node id of the lock.")


class SetPinParams(Params):
    slot: int = Field(ge=1, le=250)
    code: str = Field(pattern=r"^\d{4,12}$")


class SlotParams(Params):
    slot: int = Field(ge=1, le=250)


class CallParams(Params):
    floor: int = Field(ge=-20, le=300, description="Where the car should come (B1 = -1).")
    direction: Literal["up", "down"] | None = None
    destination_floor: int | None = Field(None, ge=-20, le=300)


class SyncClockParams(Params):
    adjust_ms: int = Field(
        ge=-(10**12), le=10**12, description="Milliseconds to add to the device clock."
    )


PING = ActionSpec(NoParams, default_ttl_seconds=5)
SYNC_CLOCK = ActionSpec(SyncClockParams, default_ttl_seconds=10, max_ttl_seconds=60)


class EntranceReaderDriver(DeviceDriver):
    kind = DeviceKind.ENTRANCE_READER
    features = Feature.OPEN | Feature.DOOR_SENSOR
    actions: ClassVar[dict[str, ActionSpec]] = {
        "open": ActionSpec(OpenParams, default_ttl_seconds=5, max_ttl_seconds=30),
        "ping": PING,
        "sync_clock": SYNC_CLOCK,
    }


class DoorLockDriver(DeviceDriver):
    kind = DeviceKind.DOOR_LOCK
    features = Feature.LOCK | Feature.PIN_CODES | Feature.DOOR_SENSOR | Feature.BATTERY
    actions: ClassVar[dict[str, ActionSpec]] = {
        "unlock": ActionSpec(NoParams, default_ttl_seconds=10),
        "lock": ActionSpec(NoParams, default_ttl_seconds=10),
        "set_pin": ActionSpec(
            SetPinParams,
            default_ttl_seconds=30,
            max_ttl_seconds=120,
            secret_params=frozenset({"code"}),
        ),
        "remove_pin": ActionSpec(SlotParams, default_ttl_seconds=30, max_ttl_seconds=120),
        "ping": PING,
        "sync_clock": SYNC_CLOCK,
    }


class DoorbellDriver(DeviceDriver):
    kind = DeviceKind.DOORBELL
    features = Feature.RING | Feature.OPEN
    actions: ClassVar[dict[str, ActionSpec]] = {
        "open": ActionSpec(OpenParams, default_ttl_seconds=5, max_ttl_seconds=30),
        "ping": PING,
        "sync_clock": SYNC_CLOCK,
    }


class ZwaveHubDriver(DeviceDriver):
    kind = DeviceKind.ZWAVE_HUB
    features = Feature.CHILD_LOCKS | Feature.LOCK | Feature.PIN_CODES
    actions: ClassVar[dict[str, ActionSpec]] = {
        "unlock": ActionSpec(ChildParams, default_ttl_seconds=15),
        "lock": ActionSpec(ChildParams, default_ttl_seconds=15),
        "ping": PING,
        "sync_clock": SYNC_CLOCK,
    }


class ElevatorAgentDriver(DeviceDriver):
    kind = DeviceKind.ELEVATOR_AGENT
    features = Feature.ELEVATOR_CALL
    # A call older than a few seconds must never run late (the resident has gone).
    actions: ClassVar[dict[str, ActionSpec]] = {
        "call": ActionSpec(CallParams, default_ttl_seconds=5, max_ttl_seconds=10),
        "ping": PING,
        "sync_clock": SYNC_CLOCK,
    }


_DRIVERS: dict[DeviceKind, DeviceDriver] = {
    driver.kind: driver
    for driver in (
        EntranceReaderDriver(),
        DoorLockDriver(),
        DoorbellDriver(),
        ZwaveHubDriver(),
        ElevatorAgentDriver(),
    )
}

# The action that opens an entrance, by the kind of device bound to it.
OPEN_ACTIONS: dict[DeviceKind, str] = {
    DeviceKind.ENTRANCE_READER: "open",
    DeviceKind.DOORBELL: "open",
    DeviceKind.DOOR_LOCK: "unlock",
}


def driver_for(kind: DeviceKind) -> DeviceDriver:
    return _DRIVERS[kind]
