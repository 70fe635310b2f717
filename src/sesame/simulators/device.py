"""A simulated device: speaks the Sesame protocol (``docs/protocol.md``) and nothing else.

It behaves as the protocol requires of a real device: client id and username are its
device id; a retained last will announces an unclean disconnect; it deduplicates
commands by id and answers a repeated one with the result it already gave; it never acts
on a command whose ``expires_at`` has passed by its own clock; it keeps every event until
``events/ack`` confirms it and resends it after reconnecting. Faults can be injected to
show how the platform copes: lost or delayed results, duplicated events, disconnection
storms, and a drifting clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

import gmqtt
from gmqtt.mqtt.constants import MQTTv311
from pydantic import ValidationError

from sesame.devices import protocol
from sesame.kit.retry import backoff_delay
from sesame.models import DeviceKind

DEDUP_MEMORY = 64


@dataclass
class Faults:
    drop_results: float = 0.0  # probability that a result is never sent
    result_delay: float = 0.0  # seconds between acting and reporting
    duplicate_events: float = 0.0  # probability that an event is published twice
    clock_offset: float = 0.0  # seconds the device clock is ahead (negative: behind)
    clock_drift_ppm: float = 0.0  # how fast the offset grows
    stuck_clock: bool = False  # a failed real-time clock: sync_clock cannot set it
    unresponsive: bool = False  # receives commands, never acts or answers
    actuation_seconds: float = 0.0  # a slow actuator; a repeat meanwhile is answered busy


class DeviceClock:
    """Real time plus an offset that grows with drift."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._started = time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset())

    def offset(self) -> float:
        """Seconds this clock is ahead of real time (negative: behind)."""
        elapsed = time.monotonic() - self._started
        return self.faults.clock_offset + elapsed * self.faults.clock_drift_ppm / 1e6

    def adjust(self, seconds: float) -> None:
        """Step the clock (what ``sync_clock`` does); the drift goes on from there."""
        self.faults.clock_offset += seconds


class _Client(gmqtt.Client):
    """Reconnects after a disconnection with capped exponential backoff and full jitter."""

    failures = 0
    gone = False  # a hung device never reconnects (gmqtt's stop_reconnect allows one try)

    async def reconnect(self, delay: bool = False) -> None:
        if self.gone:
            return
        if delay:
            self.failures += 1
            self.reconnect_delay = 0.1 + backoff_delay(self.failures, base=0.3, cap=5.0)
        await super().reconnect(delay=delay)


@dataclass
class Executed:
    command_id: uuid.UUID
    action: str
    params: dict[str, Any]
    at: datetime


class SimulatedDevice:
    kind: ClassVar[DeviceKind]

    def __init__(
        self,
        device_id: str,
        password: str,
        url: str,
        *,
        faults: Faults | None = None,
        heartbeat_interval: float = protocol.HEARTBEAT_INTERVAL_SECONDS,
        event_ack_timeout: float = protocol.EVENT_ACK_TIMEOUT_SECONDS,
        battery_pct: int = 90,
        time_sync_interval: float = 3600.0,
    ) -> None:
        self.device_id = device_id
        self.password = password
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.faults = faults or Faults()
        self.clock = DeviceClock(self.faults)
        self.heartbeat_interval = heartbeat_interval
        self.time_sync_interval = time_sync_interval
        self.event_ack_timeout = event_ack_timeout
        self.battery_pct = battery_pct
        self.boot_id = uuid.uuid4().hex[:12]
        self.executed: list[Executed] = []
        self.results: OrderedDict[uuid.UUID, protocol.CommandResult] = OrderedDict()
        self.rejected_late: list[uuid.UUID] = []
        self.pending_events: dict[uuid.UUID, tuple[protocol.DeviceEvent, float]] = {}
        self.acked_events: set[uuid.UUID] = set()
        self.time_offsets_ms: list[float] = []
        self.in_progress: set[uuid.UUID] = set()
        self.clock_syncs = 0
        self.trust: protocol.TrustDocument | None = None
        self.connected = asyncio.Event()
        self._client: _Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = 0
        # While a command runs, what it reports (events, state) waits here: the result
        # goes first, as §4 of the protocol asks, since someone waits for it.
        self._held: list[tuple[protocol.Channel, protocol.Message, bool]] | None = None
        self._started = time.monotonic()

    # -- connection -------------------------------------------------------------------------

    def _topic(self, channel: protocol.Channel) -> str:
        return protocol.topic(self.device_id, channel)

    def _new_client(self) -> _Client:
        will = gmqtt.Message(
            self._topic(protocol.Channel.STATUS),
            protocol.encode(protocol.Presence(online=False, boot_id=self.boot_id)),
            qos=1,
            retain=True,
        )
        client = _Client(self.device_id, clean_session=True, will_message=will)
        client.set_auth_credentials(self.device_id, self.password)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        return client

    async def start(self, *, within: float = 15.0) -> None:
        """Connect, announce itself and start its heartbeats; fails after ``within`` s."""
        self._client = self._new_client()
        await asyncio.wait_for(
            self._client.connect(self.host, self.port, keepalive=30, version=MQTTv311), within
        )
        await asyncio.wait_for(self.connected.wait(), within)
        self._tasks = [
            asyncio.create_task(self._heartbeats()),
            asyncio.create_task(self._resend_unacknowledged()),
            asyncio.create_task(self._time_sync()),
        ]

    async def stop(self) -> None:
        """A clean shutdown: says goodbye (offline), so no last will is needed."""
        for task in self._tasks:
            task.cancel()
        if self._client is not None and self._client.is_connected:
            self._publish(
                protocol.Channel.STATUS,
                protocol.Presence(online=False, boot_id=self.boot_id, at=self.clock.now()),
                retain=True,
            )
            with contextlib.suppress(Exception):
                await self._client.disconnect()
        self.connected.clear()

    async def crash(self) -> None:
        """Drop the connection without a word (power loss): the broker sends the last will."""
        for task in self._tasks:
            task.cancel()
        if self._client is not None:
            self._client.stop_reconnect()
            transport = getattr(getattr(self._client, "_connection", None), "_transport", None)
            if transport is not None:
                transport.abort()
        self.connected.clear()

    async def hang(self) -> None:
        """Stop without a word and leave the socket open: a device that restarted while
        the broker still holds its old connection (the new boot takes it over)."""
        for task in self._tasks:
            task.cancel()
        if self._client is not None:
            self._client.gone = True
            self._client.stop_reconnect()

    async def drop_connection(self) -> None:
        """Lose the network for a moment; the client reconnects by itself, with jitter."""
        if self._client is not None:
            transport = getattr(getattr(self._client, "_connection", None), "_transport", None)
            if transport is not None:
                transport.abort()

    def _on_connect(self, client: Any, flags: Any, rc: Any, properties: Any) -> None:
        client.failures = 0
        for channel in protocol.DEVICE_SUBSCRIBES:
            client.subscribe(self._topic(channel), qos=protocol.QOS[channel])
        self._publish(
            protocol.Channel.STATUS,
            protocol.Presence(online=True, boot_id=self.boot_id, at=self.clock.now()),
            retain=True,
        )
        self.publish_state()
        # Everything not yet acknowledged goes again: it may have been lost with the link.
        for event, _ in list(self.pending_events.values()):
            self._send_event(event)
        self.request_time()  # the clock is checked on every connection
        self.connected.set()

    def _on_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        self.connected.clear()

    def _publish(
        self, channel: protocol.Channel, message: protocol.Message, *, retain: bool = False
    ) -> None:
        if self._held is not None and channel is not protocol.Channel.RESULTS:
            self._held.append((channel, message, retain))
            return
        if self._client is not None and self._client.is_connected:
            self._client.publish(
                self._topic(channel),
                protocol.encode(message),
                qos=protocol.QOS[channel],
                retain=retain,
            )

    # -- periodic ---------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            self._seq += 1
            self._publish(
                protocol.Channel.HEARTBEAT,
                protocol.Heartbeat(
                    at=self.clock.now(),
                    seq=self._seq,
                    uptime_s=int(time.monotonic() - self._started),
                ),
            )

    async def _time_sync(self) -> None:
        while True:
            await asyncio.sleep(self.time_sync_interval)
            self.request_time()

    async def _resend_unacknowledged(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.event_ack_timeout / 2))
            cutoff = time.monotonic() - self.event_ack_timeout
            for event, sent_at in list(self.pending_events.values()):
                if sent_at < cutoff:
                    self._send_event(event)

    # -- messages ---------------------------------------------------------------------------

    async def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        parsed = protocol.parse_topic(topic)
        if parsed is None:
            return 0
        _, channel = parsed
        try:
            message = protocol.decode(channel, payload)
        except (ValidationError, ValueError):
            return 0
        if isinstance(message, protocol.Command):
            await self._on_command(message)
        elif isinstance(message, protocol.EventsAck):
            for event_id in message.event_ids:
                self.pending_events.pop(event_id, None)
                self.acked_events.add(event_id)
        elif isinstance(message, protocol.TrustDocument):
            self.on_trust(message)
        elif isinstance(message, protocol.TimeResponse):
            t4 = int(self.clock.now().timestamp() * 1000)
            # Its clock minus the server's, as the server computes it (section 7).
            offset = ((message.t1_ms - message.t2_ms) + (t4 - message.t3_ms)) / 2
            self.time_offsets_ms.append(offset)
            self._publish(
                protocol.Channel.TIME_REPORT,
                protocol.TimeReport(
                    request_id=message.request_id,
                    t1_ms=message.t1_ms,
                    t2_ms=message.t2_ms,
                    t3_ms=message.t3_ms,
                    t4_ms=t4,
                ),
            )
        return 0

    async def _on_command(self, command: protocol.Command) -> None:
        known = self.results.get(command.command_id)
        if known is not None:  # a repeat: answer again, never act again
            self._publish(protocol.Channel.RESULTS, known)
            return
        if self.faults.unresponsive:
            return
        if command.command_id in self.in_progress:  # a repeat of what is still running
            self._publish(
                protocol.Channel.RESULTS,
                self._result(command, protocol.Outcome.REJECTED, protocol.ErrorCode.BUSY),
            )
            return
        held: list[tuple[protocol.Channel, protocol.Message, bool]] = []
        # sync_clock is obeyed whatever the clock says: a wrong clock is why it comes.
        if command.action != "sync_clock" and self.clock.now() >= command.expires_at:
            self.rejected_late.append(command.command_id)
            result = self._result(
                command,
                protocol.Outcome.REJECTED,
                protocol.ErrorCode.EXPIRED,
                "arrived after it expired",
            )
        else:
            self.executed.append(
                Executed(command.command_id, command.action, dict(command.params), self.clock.now())
            )
            self.in_progress.add(command.command_id)
            self._held = held
            try:
                if self.faults.actuation_seconds:
                    await asyncio.sleep(self.faults.actuation_seconds)
                result = await self.execute(command)
            finally:
                self.in_progress.discard(command.command_id)
                self._held = None
        self.results[command.command_id] = result
        while len(self.results) > DEDUP_MEMORY:
            self.results.popitem(last=False)
        if self.faults.result_delay:
            await asyncio.sleep(self.faults.result_delay)
        if random.random() >= self.faults.drop_results:  # noqa: S311 - fault injection
            self._publish(protocol.Channel.RESULTS, result)
        for channel, message, retain in held:
            self._publish(channel, message, retain=retain)

    def _result(
        self,
        command: protocol.Command,
        outcome: protocol.Outcome,
        code: protocol.ErrorCode | None = None,
        message: str = "",
        *,
        confirmed: bool = False,
        data: dict[str, Any] | None = None,
    ) -> protocol.CommandResult:
        error = protocol.ResultError(code=code.value, message=message) if code else None
        return protocol.CommandResult(
            command_id=command.command_id,
            outcome=outcome,
            confirmed=confirmed,
            error=error,
            completed_at=self.clock.now(),
            data=data or {},
        )

    # -- behaviour, by kind -----------------------------------------------------------------

    async def execute(self, command: protocol.Command) -> protocol.CommandResult:
        if command.action == "ping":
            return self._result(command, protocol.Outcome.SUCCEEDED, confirmed=True)
        if command.action == "sync_clock":
            if self.faults.stuck_clock:
                return self._result(
                    command,
                    protocol.Outcome.FAILED,
                    protocol.ErrorCode.HARDWARE_FAILURE,
                    "the clock cannot be set",
                )
            self.clock.adjust(int(command.params["adjust_ms"]) / 1000)
            self.clock_syncs += 1
            self.request_time()  # check the correction
            return self._result(command, protocol.Outcome.SUCCEEDED, confirmed=True)
        return self._result(
            command,
            protocol.Outcome.REJECTED,
            protocol.ErrorCode.UNSUPPORTED_ACTION,
            command.action,
        )

    def state(self) -> protocol.ReportedState:
        return protocol.ReportedState(
            at=self.clock.now(), firmware="sim-1.0", battery_pct=self.battery_pct, signal_dbm=-55
        )

    def publish_state(self) -> None:
        self._publish(protocol.Channel.STATE, self.state(), retain=True)

    def emit(self, event_type: str, **data: Any) -> protocol.DeviceEvent:
        """Report an event; it is kept and resent until the gateway acknowledges it."""
        event = protocol.DeviceEvent(
            event_id=uuid.uuid4(), type=event_type, occurred_at=self.clock.now(), data=data
        )
        self._send_event(event)
        if random.random() < self.faults.duplicate_events:  # noqa: S311 - fault injection
            self._send_event(event)
        return event

    def _send_event(self, event: protocol.DeviceEvent) -> None:
        self.pending_events[event.event_id] = (event, time.monotonic())
        self._publish(protocol.Channel.EVENTS, event)

    def on_trust(self, document: protocol.TrustDocument) -> None:
        """What a device that decides offline keeps: the newest trust document."""
        if self.trust is None or document.version >= self.trust.version:
            self.trust = document

    def request_time(self) -> None:
        self._publish(
            protocol.Channel.TIME_REQUEST,
            protocol.TimeRequest(
                request_id=uuid.uuid4(), t1_ms=int(self.clock.now().timestamp() * 1000)
            ),
        )


@dataclass
class Relay:
    """A door release: on for a while, then off."""

    on: bool = False
    activations: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def pulse(self, seconds: float) -> None:
        self.on = True
        self.activations += 1
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(self._release(seconds))

    async def _release(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.on = False
