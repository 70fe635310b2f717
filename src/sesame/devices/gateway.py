"""The gateway: Sesame's MQTT clients, two per process.

It subscribes to every device's results, events, state, presence, heartbeats and time
requests (with ``+`` wildcards), and turns each into database work through the attempt
engine, the event ingestor and the presence rules. Commands, their results and the
devices' presence and heartbeats have a connection of their own (the *command lane*):
the broker queues a client's messages in order, so on a shared connection a result
would wait behind every event that arrived before it — at 1,000 events a second, long
enough for the command to be resent, and for a device whose heartbeats wait there to
look offline. Their writes go before background work at the database too
(``sesame.kit.db.urgent``). Acknowledgements, trust documents and control messages go
out on the events lane, or on the command lane while the events lane reconnects.

Every handler is guarded: a malformed message is counted and dropped, a failing handler
is logged, and neither ever stops the client. The client is gmqtt (asyncio sockets, so
TCP_NODELAY is on): measured on loopback against the same broker, a QoS 1 round trip
took 0.5 ms with gmqtt and 88 ms with the paho-based aiomqtt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import gmqtt
import orjson
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.mqtt.package import CommandWithMidPacket
from prometheus_client import Counter
from pydantic import ValidationError

from sesame.devices import clock_sync, health, protocol
from sesame.devices.attempts import AttemptEngine
from sesame.devices.broker import CONTROL_DISCONNECT
from sesame.devices.ingest import EventIngestor
from sesame.devices.repository import DeviceRepository
from sesame.kit.db import urgent, write_intent
from sesame.kit.logging import get_logger
from sesame.kit.retry import backoff_delay
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime

log = get_logger("sesame.gateway")

MESSAGES = Counter(
    "sesame_mqtt_messages_total", "Device messages received, by channel", ["channel"]
)
PROTOCOL_ERRORS = Counter(
    "sesame_mqtt_protocol_errors_total",
    "Device messages dropped as malformed, by channel",
    ["channel"],
)
EVENTS_REFUSED = Counter(
    "sesame_device_events_refused_total",
    "Device events refused for good (and acknowledged, so never resent), by reason",
    ["reason"],
)
HANDLER_ERRORS = Counter(
    "sesame_mqtt_handler_errors_total",
    "Device messages whose handling failed, by channel",
    ["channel"],
)

# One series per channel, looked up once: ``labels()`` on every message cost more than
# counting it.
_RECEIVED = {channel: MESSAGES.labels(channel.value) for channel in protocol.Channel}

# The command lane: results, and what says whether a device can take a command now (its
# presence and heartbeats), so that a flood of events never makes a device look offline.
COMMAND_CHANNELS = (
    protocol.Channel.RESULTS,
    protocol.Channel.STATUS,
    protocol.Channel.HEARTBEAT,
)
SUBSCRIBED_CHANNELS = (
    protocol.Channel.EVENTS,
    protocol.Channel.STATE,
    protocol.Channel.TIME_REQUEST,
    protocol.Channel.TIME_REPORT,
)
SWEEP_SECONDS = 1.0
HEARTBEAT_FLUSH_SECONDS = 2.0
STATE_FLUSH_SECONDS = 0.5


class _JitteredClient(gmqtt.Client):
    """gmqtt, with two changes (which is why its version is pinned):

    - it reconnects after a fixed delay; this one backs off with full jitter;
    - it writes each acknowledgement (PUBACK) to the socket on its own, one ``send`` per
      message received; this one writes the acknowledgements of one event-loop turn
      together. At a few thousand events a second those sends were a tenth of the
      server's CPU (profiled: ``bench/event_ingest.py`` on PostgreSQL).
    """

    failures = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: list[bytes] = []
        self._acks_for: Any = None  # the connection they answer

    async def reconnect(self, delay: bool = False) -> None:
        if delay:
            self.failures += 1
            self.reconnect_delay = 0.2 + backoff_delay(self.failures, base=0.5, cap=15.0)
        await super().reconnect(delay=delay)

    def _send_command_with_mid(self, cmd: Any, mid: int, dup: bool, reason_code: int = 0) -> None:
        connection = self._connection
        if connection is None:
            return
        if self._acks and self._acks_for is not connection:
            self._acks.clear()  # they answered a connection that is gone
        packet = CommandWithMidPacket.build_package(
            cmd, mid, dup, reason_code=reason_code, proto_ver=connection._protocol.proto_ver
        )
        self._acks.append(packet)
        if len(self._acks) == 1:
            self._acks_for = connection
            asyncio.get_running_loop().call_soon(self._write_acks)

    def _write_acks(self) -> None:
        data, self._acks = b"".join(self._acks), []
        if data and self._connection is self._acks_for and self._connection is not None:
            self._connection._protocol.write_data(data)


def _ms(moment: Any) -> int:
    return int(moment.timestamp() * 1000)


def _invalid_fields(exc: Exception) -> list[str]:
    """Where a message is invalid, never what it held: paths like ``data`` or
    ``occurred_at``."""
    if not isinstance(exc, ValidationError):
        return []
    return [".".join(str(part) for part in error["loc"]) for error in exc.errors()][:5]


def _presence_message(topic: str, device: Any, now: Any) -> dict[str, Any]:
    """The outbox message of a device going online or offline."""
    return outbox.message(
        topic, partner_id=device.partner_id, aggregate_id=device.id, site_id=device.site_id, at=now
    )


def broker_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ValueError(f"unsupported MQTT URL {url!r}; use mqtt://host:port")
    return parts.hostname, parts.port or 1883


class Gateway:
    def __init__(
        self, runtime: Runtime, *, url: str, password: str, heartbeat_timeout_seconds: float
    ) -> None:
        self.runtime = runtime
        self.host, self.port = broker_address(url)
        self.password = password
        self.heartbeat_timeout = timedelta(seconds=heartbeat_timeout_seconds)
        # Unguessable, so that no one can aim at it (a device cannot take it anyway: the
        # embedded broker binds a device's client id to its username, and Mosquitto has
        # the gateway on a listener of its own).
        client_id = (
            f"{protocol.GATEWAY_USERNAME}-{secrets.token_hex(8)}-{socket.gethostname()}"
            f"-{os.getpid()}"
        )
        self._ready = asyncio.Event()
        self._commands_ready = asyncio.Event()
        self._client = self._new_client("events", client_id[:62], SUBSCRIBED_CHANNELS, self._ready)
        self._commands = self._new_client(
            "commands", client_id[:62] + "-c", COMMAND_CHANNELS, self._commands_ready
        )
        self.engine = AttemptEngine(
            runtime, self.publish_command, is_connected=lambda: self.connected
        )
        self.ingestor = EventIngestor(runtime, self.publish)
        self._locks: defaultdict[UUID, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._heard: set[UUID] = set()
        self._flushing: set[UUID] = set()  # heard, being written by ``_flush_heard``
        self.ingestor.on_seen = lambda devices: self._heard.update(devices)
        self._states: dict[UUID, protocol.ReportedState] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def _new_client(
        self,
        lane: str,
        client_id: str,
        channels: tuple[protocol.Channel, ...],
        ready: asyncio.Event,
    ) -> _JitteredClient:
        client = _JitteredClient(client_id, clean_session=True)
        client.set_auth_credentials(protocol.GATEWAY_USERNAME, self.password)

        def connected(client: Any, flags: Any, rc: Any, properties: Any) -> None:
            client.failures = 0
            for channel in channels:
                client.subscribe(protocol.wildcard(channel), qos=protocol.QOS[channel])
            ready.set()
            log.info("gateway_subscribed", lane=lane)

        def disconnected(client: Any, packet: Any, exc: Any = None) -> None:
            ready.clear()
            log.warning("gateway_disconnected", lane=lane)

        client.on_connect = connected
        client.on_message = self._on_message
        client.on_disconnect = disconnected
        return client

    @property
    def connected(self) -> bool:
        """Both lanes are up: commands can be sent and events heard."""
        return self.events_connected and self.commands_connected

    @property
    def events_connected(self) -> bool:
        return bool(self._client.is_connected) and self._ready.is_set()

    @property
    def can_publish(self) -> bool:
        """Either lane is up, so ``publish`` can send (acknowledgements, trust, control)."""
        return self.events_connected or self.commands_connected

    @property
    def commands_connected(self) -> bool:
        return bool(self._commands.is_connected) and self._commands_ready.is_set()

    async def start(self, *, connect_timeout: float = 30.0) -> None:
        deadline = time.monotonic() + connect_timeout
        for client, ready in ((self._commands, self._commands_ready), (self._client, self._ready)):
            attempt = 0
            while True:
                try:
                    await client.connect(self.host, self.port, keepalive=30, version=MQTTv311)
                    break
                except (OSError, gmqtt.mqtt.handler.MQTTConnectError) as exc:
                    attempt += 1
                    if time.monotonic() > deadline:
                        raise ConnectionError(
                            f"MQTT broker {self.host}:{self.port} unreachable"
                        ) from exc
                    await asyncio.sleep(backoff_delay(attempt, base=0.2, cap=3.0) + 0.05)
            await asyncio.wait_for(ready.wait(), timeout=max(0.1, deadline - time.monotonic()))
        self.ingestor.start()
        self._tasks = [
            asyncio.create_task(self._every(SWEEP_SECONDS, self._sweep)),
            asyncio.create_task(self._every(HEARTBEAT_FLUSH_SECONDS, self._flush_heard)),
            asyncio.create_task(self._every(STATE_FLUSH_SECONDS, self._flush_states)),
        ]
        log.info("gateway_connected", broker=f"{self.host}:{self.port}")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.ingestor.stop()
        await self.engine.close()
        for client in (self._client, self._commands):
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        """Publish acknowledgements, retained documents and control messages: on the
        events lane, or on the command lane while the events lane reconnects (a trust
        document sent as a key is revoked must not wait for it)."""
        if self.events_connected:
            self._client.publish(topic, payload, qos=qos, retain=retain)
        elif self.commands_connected:
            self._commands.publish(topic, payload, qos=qos, retain=retain)
        else:
            raise ConnectionError("not connected to the MQTT broker")

    async def publish_command(self, topic: str, payload: bytes, qos: int) -> None:
        """Publish on the command lane, which carries nothing but commands and results."""
        if not self.commands_connected:
            raise ConnectionError("not connected to the MQTT broker")
        self._commands.publish(topic, payload, qos=qos)

    async def disconnect_device(self, device_id: UUID) -> None:
        """Ask the broker to drop a device's live session (its credentials changed)."""
        payload = orjson.dumps({"username": str(device_id)})
        try:
            await self.publish(CONTROL_DISCONNECT, payload, 1)
        except ConnectionError:
            log.warning("device_disconnect_not_sent", device_id=str(device_id))

    # -- connection -------------------------------------------------------------------------

    async def _every(self, seconds: float, job: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                if self.connected:
                    await job()
            except Exception as exc:
                log.warning("gateway_job_failed", job=job.__name__, error_type=type(exc).__name__)

    # -- messages ---------------------------------------------------------------------------

    async def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        parsed = protocol.parse_topic(topic)
        if parsed is None:
            return 0
        device_id, channel = parsed
        _RECEIVED[channel].inc()
        if len(payload) > protocol.MAX_DEVICE_MESSAGE_BYTES:
            PROTOCOL_ERRORS.labels(channel.value).inc()
            log.info(
                "oversized_device_message",
                device_id=str(device_id),
                channel=channel.value,
                size=len(payload),
            )
            return 0
        try:
            message = protocol.decode(channel, payload)
        except (ValidationError, ValueError) as exc:
            PROTOCOL_ERRORS.labels(channel.value).inc()
            log.info(
                "malformed_device_message",
                device_id=str(device_id),
                channel=channel.value,
                fields=_invalid_fields(exc),
            )
            event_id = protocol.event_id_of(payload) if channel is protocol.Channel.EVENTS else None
            if event_id is not None:
                await self._refuse_event(device_id, event_id, protocol.RefusalReason.INVALID)
            return 0
        try:
            await self._handle(device_id, channel, message)
        except Exception as exc:
            HANDLER_ERRORS.labels(channel.value).inc()
            log.warning(
                "device_message_failed",
                device_id=str(device_id),
                channel=channel.value,
                error_type=type(exc).__name__,
            )
        return 0

    async def _handle(
        self, device_id: UUID, channel: protocol.Channel, message: protocol.Message
    ) -> None:
        if isinstance(message, protocol.CommandResult):
            self._heard.add(device_id)
            await self.engine.on_result(device_id, message)
        elif isinstance(message, protocol.DeviceEvent):
            refusal = protocol.occurred_at_refusal(
                message.occurred_at, self.runtime.clock.now()
            ) or protocol.access_method_refusal(message)
            if refusal is not None:
                await self._refuse_event(device_id, message.event_id, refusal)
            else:
                await self.ingestor.submit(device_id, message)
        elif isinstance(message, protocol.Heartbeat):
            self._heard.add(device_id)
        elif isinstance(message, protocol.TimeRequest):
            await self._answer_time(device_id, message)
        elif isinstance(message, protocol.TimeReport):
            await clock_sync.on_report(self.runtime, device_id, message)
        elif isinstance(message, protocol.Presence):
            await self._presence(device_id, message)
        elif isinstance(message, protocol.ReportedState):
            await self._state(device_id, message)

    async def _refuse_event(
        self, device_id: UUID, event_id: UUID, reason: protocol.RefusalReason
    ) -> None:
        """Acknowledge an event that will never be stored, so that the device stops
        sending it; nothing of it is written."""
        EVENTS_REFUSED.labels(reason.value).inc()
        log.warning(
            "device_event_refused",
            device_id=str(device_id),
            event_id=str(event_id),
            reason=reason.value,
        )
        ack = protocol.EventsAck(
            event_ids=[event_id],
            refused=[protocol.EventRefusal(event_id=event_id, reason=reason.value)],
        )
        try:
            await self.publish(
                protocol.topic(device_id, protocol.Channel.EVENTS_ACK), protocol.encode(ack), 1
            )
        except ConnectionError:  # the device sends it again, and is refused again
            log.info("event_refusal_not_sent", device_id=str(device_id))

    async def _answer_time(self, device_id: UUID, request: protocol.TimeRequest) -> None:
        received = _ms(self.runtime.clock.now())
        response = protocol.TimeResponse(
            request_id=request.request_id,
            t1_ms=request.t1_ms,
            t2_ms=received,
            t3_ms=_ms(self.runtime.clock.now()),
        )
        await self.publish(
            protocol.topic(device_id, protocol.Channel.TIME_RESPONSE),
            protocol.encode(response),
            protocol.QOS[protocol.Channel.TIME_RESPONSE],
        )

    async def _presence(self, device_id: UUID, presence: protocol.Presence) -> None:
        came_online = False
        async with self._locks[device_id]:
            with write_intent(), urgent():
                async with self.runtime.session_factory() as session:
                    device = await DeviceRepository(session).locked(device_id)
                    if device is None or device.credential_hash is None:
                        return
                    now = self.runtime.clock.now()
                    if presence.online:
                        came_online = health.went_online(device, now, presence.boot_id)
                        changed = came_online
                    elif health.stale_will(device, presence.boot_id):
                        # The last will of an earlier boot, delivered after the device came
                        # back (a session taken over, a will the broker sent late): the
                        # device is online with another boot.
                        log.info("stale_last_will", device_id=str(device_id))
                        changed = False
                    else:
                        changed = health.went_offline(device, now, "disconnected")
                    if changed:
                        await outbox.append(
                            session,
                            [
                                _presence_message(
                                    "device.online" if presence.online else "device.offline",
                                    device,
                                    now,
                                )
                            ],
                        )
                    await session.commit()
        if came_online:
            await self.engine.dispatch(device_id)
        if presence.online:  # every (re)connection, not only transitions: the broker may
            # have lost what it retained for the device (a restart of the embedded one)
            for hook in self.runtime.device_hooks.online:
                try:
                    await hook(device_id)
                except Exception as exc:
                    log.warning("online_hook_failed", error_type=type(exc).__name__)

    async def _state(self, device_id: UUID, state: protocol.ReportedState) -> None:
        """Keep the latest report; ``_flush_states`` writes them in batches (a state
        report is never urgent, and a write per report would compete with commands)."""
        self._states[device_id] = state

    async def _flush_states(self) -> None:
        states, self._states = self._states, {}
        if not states:
            return
        with write_intent():
            async with self.runtime.session_factory() as session:
                now = self.runtime.clock.now()
                for device in await DeviceRepository(session).locked_many(sorted(states)):
                    health.reported(device, states[device.id], now)
                await session.commit()

    # -- periodic work ----------------------------------------------------------------------

    async def _sweep(self) -> None:
        await self.engine.sweep()
        cutoff = self.runtime.clock.now() - self.heartbeat_timeout
        # A read first: most seconds nobody has gone silent, and a write transaction
        # every second would take the SQLite write lock from the command path for nothing.
        async with self.runtime.read_session_factory() as reader:
            candidates = await DeviceRepository(reader).silent_ids_since(cutoff)
        if not set(candidates) - self._recently_heard():
            return
        with write_intent(), urgent():
            async with self.runtime.session_factory() as session:
                silent = await DeviceRepository(session).silent_since(cutoff)
                now = self.runtime.clock.now()
                messages = []
                for device in silent:
                    if device.id in self._recently_heard():
                        continue  # heard, but not written yet: not silent
                    if health.went_offline(device, now, "no heartbeat"):
                        messages.append(_presence_message("device.offline", device, now))
                await outbox.append(session, messages)
                await session.commit()

    def _recently_heard(self) -> set[UUID]:
        """Devices heard from whose ``last_seen_at`` the database may not show yet."""
        return self._heard | self._flushing

    async def _flush_heard(self) -> None:
        """Record who was heard from; a device marked offline that is heard is online."""
        heard, self._heard = self._heard, set()
        if not heard:
            return
        back: list[UUID] = []
        # Until the write commits, the sweep must still count these as heard: it reads
        # ``last_seen_at`` from the database, which does not show them yet.
        self._flushing = heard
        try:
            with write_intent(), urgent():
                async with self.runtime.session_factory() as session:
                    devices = DeviceRepository(session)
                    now = self.runtime.clock.now()
                    await devices.touch(sorted(heard), now)
                    messages = []
                    for device in await devices.offline_among(sorted(heard)):
                        if health.went_online(device, now, device.boot_id):
                            back.append(device.id)
                            messages.append(_presence_message("device.online", device, now))
                    await outbox.append(session, messages)
                    await session.commit()
        except BaseException:
            self._heard |= heard  # not written: the next flush tries again
            raise
        finally:
            self._flushing = set()
        for device_id in back:
            await self.engine.dispatch(device_id)
