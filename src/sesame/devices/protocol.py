"""The Sesame device protocol, version 1: every message a device and the gateway exchange.

These models are the single definition of the protocol. The gateway parses and builds
messages with them, the simulators speak through them, and the JSON Schemas in
``docs/protocol.md`` are generated from them (a test fails when the document is stale).

Compatibility rules that hold for every message: unknown fields are ignored (so either
side may add optional fields within version 1); times are RFC 3339 in UTC; identifiers
are UUIDs in their canonical text form. Sizes are bounded: a device message is at most
``MAX_DEVICE_MESSAGE_BYTES``, and the free-form ``data``/``extra`` objects in it at most
``MAX_DATA_BYTES`` of JSON.
"""

from __future__ import annotations

import enum
import functools
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from sesame.kit.ids import parse_id

PROTOCOL_VERSION = 1
TOPIC_ROOT = "sesame/v1/devices"
GATEWAY_USERNAME = "sesame-gateway"


class Channel(enum.StrEnum):
    """The last part of a topic: ``sesame/v1/devices/{device_id}/{channel}``."""

    COMMANDS = "commands"
    RESULTS = "results"
    EVENTS = "events"
    EVENTS_ACK = "events/ack"
    STATE = "state"
    STATUS = "status"
    HEARTBEAT = "heartbeat"
    TIME_REQUEST = "time/request"
    TIME_RESPONSE = "time/response"
    TIME_REPORT = "time/report"
    TRUST = "trust"


# Who publishes on which channel, at which QoS, and whether the broker retains it.
DEVICE_PUBLISHES = frozenset(
    {
        Channel.RESULTS,
        Channel.EVENTS,
        Channel.STATE,
        Channel.STATUS,
        Channel.HEARTBEAT,
        Channel.TIME_REQUEST,
        Channel.TIME_REPORT,
    }
)
DEVICE_SUBSCRIBES = frozenset(
    {Channel.COMMANDS, Channel.EVENTS_ACK, Channel.TIME_RESPONSE, Channel.TRUST}
)
QOS = {
    Channel.COMMANDS: 1,
    Channel.RESULTS: 1,
    Channel.EVENTS: 1,
    Channel.EVENTS_ACK: 1,
    Channel.STATE: 1,
    Channel.STATUS: 1,
    Channel.HEARTBEAT: 0,
    Channel.TIME_REQUEST: 0,
    Channel.TIME_RESPONSE: 0,
    Channel.TIME_REPORT: 0,
    Channel.TRUST: 1,
}
RETAINED = frozenset({Channel.STATE, Channel.STATUS, Channel.TRUST})


def topic(device_id: UUID | str, channel: Channel) -> str:
    return f"{TOPIC_ROOT}/{device_id}/{channel.value}"


def wildcard(channel: Channel) -> str:
    """The filter the gateway subscribes with to hear one channel of every device."""
    return f"{TOPIC_ROOT}/+/{channel.value}"


@functools.lru_cache(maxsize=1 << 16)
def parse_topic(name: str) -> tuple[UUID, Channel] | None:
    """``(device_id, channel)`` of a device topic, or None for anything else. Cached: a
    fleet publishes on a few topics per device, thousands of times a second."""
    prefix = TOPIC_ROOT + "/"
    if not name.startswith(prefix):
        return None
    device_part, _, channel_part = name[len(prefix) :].partition("/")
    device_id = parse_id(device_part)  # one spelling per device, as Mosquitto's ACL has it
    if device_id is None:
        return None
    try:
        return device_id, Channel(channel_part)
    except ValueError:
        return None


Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,47}$")]

# The largest message a device may send; the gateway drops anything larger unread. (The
# brokers' own packet limit, ``SESAME_MQTT_MAX_PACKET_BYTES``, is higher: trust documents
# the gateway sends are larger.)
MAX_DEVICE_MESSAGE_BYTES = 64 * 1024
MAX_DATA_BYTES = 8 * 1024


def _storable(value: dict[str, Any]) -> dict[str, Any]:
    """Small, and storable as JSON by both databases (PostgreSQL refuses NUL in text)."""
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:  # an integer past 64 bits
        raise ValueError("not storable as JSON") from exc
    if len(encoded) > MAX_DATA_BYTES:
        raise ValueError(f"at most {MAX_DATA_BYTES} bytes of JSON")
    if b"\\u0000" in encoded:
        raise ValueError("must not contain NUL characters")
    return value


Data = Annotated[dict[str, Any], AfterValidator(_storable)]


class Message(BaseModel):
    """Fields every message carries. Unknown fields are ignored, never an error."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = Field(default=1, description="Protocol version.")


# -- commands and their results -----------------------------------------------------------


class Command(Message):
    """Gateway → device on ``commands``, QoS 1.

    A device must execute a command at most once: it remembers the ``command_id`` of at
    least its last 64 commands and answers a repeated one with the result it already
    sent, without acting again. It must not act on a command whose ``expires_at`` has
    passed by its clock; it answers ``rejected`` with code ``expired`` instead.
    """

    command_id: UUID
    action: Identifier = Field(description="What to do, e.g. `open`, `unlock`, `call`.")
    params: dict[str, Any] = Field(default_factory=dict)
    issued_at: datetime
    expires_at: datetime = Field(description="After this instant the command must not run.")


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"  # done
    FAILED = "failed"  # tried and could not (a jammed bolt)
    REJECTED = "rejected"  # not attempted (expired, unsupported, invalid, not permitted)


class ErrorCode(enum.StrEnum):
    """Codes a device puts in a failed or rejected result. Receivers tolerate unknown codes."""

    EXPIRED = "expired"
    UNSUPPORTED_ACTION = "unsupported_action"
    INVALID_PARAMS = "invalid_params"
    BUSY = "busy"
    JAMMED = "jammed"
    HARDWARE_FAILURE = "hardware_failure"
    NOT_PERMITTED = "not_permitted"
    NO_SPACE = "no_space"
    DUPLICATE_CODE = "duplicate_code"
    CONSTRAINTS_VIOLATED = "constraints_violated"


class ResultError(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    code: Identifier
    message: str = Field(default="", max_length=500)


class CommandResult(Message):
    """Device → gateway on ``results``, QoS 1: the outcome of one command.

    ``confirmed`` is true only when the device observed the physical effect (the relay
    switched, the bolt reached its position, a door sensor moved); accepted-but-unverified
    is ``succeeded`` with ``confirmed`` false.
    """

    command_id: UUID
    outcome: Outcome
    confirmed: bool = False
    error: ResultError | None = None
    completed_at: datetime
    data: Data = Field(default_factory=dict)


# -- events, state, presence ---------------------------------------------------------------


EVENT_MAX_AGE = timedelta(days=365)
EVENT_MAX_LEAD = timedelta(days=1)


def occurred_at_refusal(occurred_at: datetime, now: datetime) -> RefusalReason | None:
    """Why an event's time is refused, if it is: far from the server's clock (a device
    whose clock was reset to 1970 or year 1, or runs a day ahead)."""
    try:
        if now - EVENT_MAX_AGE <= occurred_at <= now + EVENT_MAX_LEAD:
            return None
    except OverflowError:  # year 1 or 9999 with an offset: no UTC instant
        pass
    return RefusalReason.OCCURRED_AT_OUT_OF_RANGE


def event_id_of(payload: bytes) -> UUID | None:
    """The ``event_id`` of an event that is otherwise invalid, to refuse it by id."""
    try:
        document = orjson.loads(payload)
        return UUID(str(document["event_id"])) if isinstance(document, dict) else None
    except (orjson.JSONDecodeError, KeyError, ValueError):
        return None


class EventType(enum.StrEnum):
    """Event types the platform understands. Devices may send others; they are stored."""

    ACCESS_GRANTED = "access_granted"
    ACCESS_DENIED = "access_denied"
    DOOR_OPENED = "door_opened"
    DOOR_CLOSED = "door_closed"
    DOOR_FORCED = "door_forced"
    DOOR_HELD_OPEN = "door_held_open"
    TAMPER = "tamper"
    LOW_BATTERY = "low_battery"
    DOORBELL_RANG = "doorbell_rang"
    CODE_ENTERED = "code_entered"
    LOCK_JAMMED = "lock_jammed"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    ELEVATOR_ARRIVED = "elevator_arrived"
    REBOOTED = "rebooted"
    PIN_CHANGED = "pin_changed"


class DeviceEvent(Message):
    """Device → gateway on ``events``, QoS 1.

    MQTT acknowledges a publish hop by hop, so a broker's PUBACK does not mean the event
    is stored. The gateway answers on ``events/ack`` once the event is durably stored; a
    device keeps every event until that answer and sends it again, with the same
    ``event_id``, after reconnecting and whenever ``EVENT_ACK_TIMEOUT_SECONDS`` pass
    without it. The gateway stores each ``event_id`` of a device once, so resending is
    always safe.
    """

    event_id: UUID
    type: Identifier
    occurred_at: AwareDatetime = Field(
        description="When it happened, by the device's clock; refused (see `EventsAck`) "
        f"more than {EVENT_MAX_AGE.days} days before or {EVENT_MAX_LEAD.days} day after "
        "the server's clock."
    )
    data: Data = Field(default_factory=dict)


EVENT_ACK_TIMEOUT_SECONDS = 10


class RefusalReason(enum.StrEnum):
    INVALID = "invalid"  # not a valid DeviceEvent (its data too large, say)
    OCCURRED_AT_OUT_OF_RANGE = "occurred_at_out_of_range"
    UNKNOWN_ACCESS_METHOD = "unknown_access_method"  # an access decision without a known method


class AccessMethod(enum.StrEnum):
    """How a door was opened or refused: the ``method`` of ``access_granted`` and
    ``access_denied`` data. An access event without one of these is refused."""

    MOBILE_CREDENTIAL = "mobile_credential"  # a phone's token (section 10)
    QR = "qr"  # a scanned guest pass (section 10)
    PIN = "pin"  # a code typed at a lock's keypad (section 11)
    CARD = "card"  # a card the device itself knows
    REMOTE = "remote"  # released by a command (`open`, `unlock`)
    MANUAL = "manual"  # released by hand at the device: an exit button, a concierge's switch


ACCESS_EVENT_TYPES = frozenset({"access_granted", "access_denied"})
_ACCESS_METHODS = frozenset(method.value for method in AccessMethod)


def access_method_refusal(event: DeviceEvent) -> RefusalReason | None:
    """Why an access event is refused, if it is: its ``method`` is not one of
    ``AccessMethod`` (the platform does not guess how a door was opened)."""
    if event.type not in ACCESS_EVENT_TYPES:
        return None
    method = event.data.get("method")
    if isinstance(method, str) and method in _ACCESS_METHODS:
        return None
    return RefusalReason.UNKNOWN_ACCESS_METHOD


class EventRefusal(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: UUID
    reason: Identifier = Field(description="A `RefusalReason`; tolerate unknown ones.")


class EventsAck(Message):
    """Gateway → device on ``events/ack``, QoS 1: forget these events.

    ``event_ids`` lists every event the device may forget: those stored, and those refused
    for good, which ``refused`` also lists with the reason. Sending a refused event again
    never stores it; a device reports or logs it, and drops it.
    """

    event_ids: list[UUID] = Field(max_length=1000)
    refused: list[EventRefusal] = Field(default_factory=list, max_length=1000)


class DoorState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    UNKNOWN = "unknown"


class BoltState(enum.StrEnum):
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    JAMMED = "jammed"
    UNKNOWN = "unknown"


class ReportedState(Message):
    """Device → gateway on ``state``, QoS 1, retained: what the device knows of itself.

    Sent after connecting and whenever something in it changes; fields a device does not
    have are left out.
    """

    at: datetime
    firmware: str | None = Field(default=None, max_length=64)
    battery_pct: int | None = Field(default=None, ge=0, le=100)
    signal_dbm: int | None = Field(default=None, ge=-150, le=0)
    door: DoorState | None = None
    bolt: BoltState | None = None
    relay_on: bool | None = None
    clock_offset_ms: int | None = Field(
        default=None,
        description="The device's last measured offset: its clock minus the server's, in ms.",
    )
    extra: Data = Field(
        default_factory=dict,
        description="Anything else, kept as it is. Named keys: `events_dropped` (events"
        " dropped unacknowledged since boot), `pin_constraints` (a lock's code rules).",
    )


class Presence(Message):
    """Device → gateway on ``status``, QoS 1, retained.

    A device publishes ``{"online": true, ...}`` right after connecting, and registers
    ``{"online": false, "boot_id": ...}`` as its MQTT last will on the same topic, so that
    the broker announces an unclean disconnect.
    """

    online: bool
    boot_id: str | None = Field(default=None, max_length=64)
    at: datetime | None = None


class Heartbeat(Message):
    """Device → gateway on ``heartbeat``, QoS 0, every ``HEARTBEAT_INTERVAL_SECONDS``.

    A device silent for three intervals is considered offline even if its connection
    looks open.
    """

    at: datetime
    seq: int = Field(ge=0)
    uptime_s: int = Field(default=0, ge=0)


HEARTBEAT_INTERVAL_SECONDS = 30


class TimeRequest(Message):
    """Device → gateway on ``time/request``, QoS 0: the first half of a clock exchange.

    ``t1_ms`` is the device's clock (Unix milliseconds) when it sends the request.
    """

    request_id: UUID
    t1_ms: int


class TimeResponse(Message):
    """Gateway → device on ``time/response``: the server's receive and send times.

    With ``t4_ms``, its own clock when the response arrives, the device reports all four
    on ``time/report``. Its offset is ``((t1 - t2) + (t4 - t3)) / 2``, its clock minus the
    server's (positive: it runs ahead), and the round trip ``(t4 - t1) - (t3 - t2)``. A
    device never steps its clock from this: the server corrects it with ``sync_clock``.
    """

    request_id: UUID
    t1_ms: int
    t2_ms: int
    t3_ms: int


class TimeReport(Message):
    """Device → gateway on ``time/report``, QoS 0: the four timestamps of an exchange.

    ``t1_ms`` and ``t4_ms`` are the device's clock when it sent the request and when the
    response arrived; ``t2_ms`` and ``t3_ms`` are the server's, from the response. The
    server computes the device's offset and the round trip from them and keeps both; a
    device whose clock is off by more than the threshold is sent ``sync_clock``.
    """

    request_id: UUID
    t1_ms: int
    t2_ms: int
    t3_ms: int
    t4_ms: int


class TrustedKey(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    kid: str = Field(max_length=64, description="The `kid` of credentials it signs.")
    x: str = Field(max_length=64, description="Ed25519 public key, raw 32 bytes, base64url.")


# How many blocked keys a reader must be able to hold (about 4 MB of document). Sesame
# lists every key whose credentials may still be in date; past this it says so loudly.
MAX_BLOCKED_KEYS = 100_000


class TrustDocument(Message):
    """Gateway → device on ``trust``, QoS 1, retained: what a reader needs to decide alone.

    Sent to every device that guards an entrance, when it connects and whenever something
    in it changes (a key revoked or suspended, a signing key rotated). A reader keeps the
    newest ``version`` it has seen and ignores older ones.
    """

    version: int = Field(description="Increases with every change (Unix milliseconds).")
    site_id: UUID
    entrance_id: UUID | None = Field(
        default=None,
        description="The entrance this device guards. Absent (or null) for a reader bound to"
        " none: it then holds no keys and refuses every credential (`no_trust`).",
    )
    keys: list[TrustedKey]
    revoked_keys: list[UUID] = Field(
        default_factory=list,
        max_length=MAX_BLOCKED_KEYS,
        description=(
            "Every key to refuse because a credential issued for it may still be in date"
            " (revoked, suspended or used up); a key leaves the list once none can be."
            f" A reader must hold {MAX_BLOCKED_KEYS:,} of them."
        ),
    )


MESSAGES_BY_CHANNEL: dict[Channel, type[Message]] = {
    Channel.COMMANDS: Command,
    Channel.RESULTS: CommandResult,
    Channel.EVENTS: DeviceEvent,
    Channel.EVENTS_ACK: EventsAck,
    Channel.STATE: ReportedState,
    Channel.STATUS: Presence,
    Channel.HEARTBEAT: Heartbeat,
    Channel.TIME_REQUEST: TimeRequest,
    Channel.TIME_RESPONSE: TimeResponse,
    Channel.TIME_REPORT: TimeReport,
    Channel.TRUST: TrustDocument,
}


def encode(message: Message) -> bytes:
    return message.model_dump_json(exclude_none=True).encode()


def decode(channel: Channel, payload: bytes) -> Message:
    """Parse a payload for ``channel``; raises ``pydantic.ValidationError`` if malformed."""
    return MESSAGES_BY_CHANNEL[channel].model_validate_json(payload)
