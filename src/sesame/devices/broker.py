"""MQTT brokers: the embedded one, and a generated configuration for Mosquitto.

Both enforce the same rules, which the protocol document states (section 2a says where
Mosquitto's answer differs):

1. A device connects only with its own credentials: username and client id are its
   device id, the password its secret. Secrets are stored in Mosquitto's password-file
   form (PBKDF2-SHA512), so one stored hash serves both brokers. A client id belongs to
   those credentials: no one else, refused or signed in, can take it over.
2. A device publishes only on its own device channels and receives only the channels
   the gateway sends it (``DEVICE_PUBLISHES`` / ``DEVICE_SUBSCRIBES``) — its last will
   included, which is a publish made later. The gateway's own user may use the whole
   ``sesame/v1/`` tree.

Both also bound the size of a packet (``SESAME_MQTT_MAX_PACKET_BYTES``): a client that
sends a larger one is disconnected before the broker reads it.

The embedded broker is amqtt (fine for a few hundred devices; its sockets get
TCP_NODELAY from asyncio). Larger sites point ``SESAME_MQTT_URL`` at Mosquitto or a
cluster; ``sesame broker config`` writes its configuration, with ``set_tcp_nodelay true``
(without it, QoS 1 round trips on loopback take 44-88 ms instead of under 1 ms).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import signal
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker, BrokerContext
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin
from amqtt.session import Session

from sesame.devices.protocol import (
    DEVICE_PUBLISHES,
    DEVICE_SUBSCRIBES,
    GATEWAY_USERNAME,
    TOPIC_ROOT,
    Channel,
    parse_topic,
)
from sesame.kit.logging import get_logger

log = get_logger("sesame.broker")

SESAME_ROOT = "sesame/v1/"
CONTROL_DISCONNECT = SESAME_ROOT + "control/disconnect"
PBKDF2_ITERATIONS = 101  # Mosquitto's own default for password files
SALT_BYTES = 12
DEFAULT_MAX_PACKET_BYTES = 1024 * 1024
STOP_RECANCEL_SECONDS = 0.5  # a connection's reader still running after this: cancel again
STOP_PATIENCE = 5.0  # then close its connection under it


def hash_password(secret: str, *, salt: bytes | None = None) -> str:
    """``$7$101$<salt>$<hash>``: the form Mosquitto's password file stores."""
    salt = salt or os.urandom(SALT_BYTES)
    derived = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, PBKDF2_ITERATIONS)
    return "$".join(
        [
            "",
            "7",
            str(PBKDF2_ITERATIONS),
            base64.b64encode(salt).decode(),
            base64.b64encode(derived).decode(),
        ]
    )


def verify_password(stored: str | None, secret: str) -> bool:
    if not stored:
        return False
    try:
        _, version, iterations, salt, expected = stored.split("$")
        if version != "7":
            return False
        derived = hashlib.pbkdf2_hmac(
            "sha512", secret.encode(), base64.b64decode(salt), int(iterations)
        )
        return hmac.compare_digest(derived, base64.b64decode(expected))
    except (ValueError, TypeError):
        return False


def device_may(username: str | None, action: str, topic: str) -> bool:
    """The access rule shared by both brokers (``action``: publish, subscribe, receive)."""
    if username == GATEWAY_USERNAME:
        return topic.startswith(SESAME_ROOT)
    parsed = parse_topic(topic)
    if parsed is None or username is None or str(parsed[0]) != username:
        return False
    channel = parsed[1]
    if action == "publish":
        return channel in DEVICE_PUBLISHES
    return channel in DEVICE_SUBSCRIBES


# A callable that says whether (username, password, client_id) may connect.
CredentialCheck = Callable[[str, str, str], Awaitable[bool]]


class SesameAuthPlugin(BaseAuthPlugin):
    """amqtt plugin: only known devices (and the gateway) connect, with client id = username."""

    @dataclass
    class Config:
        check: Any = None

    async def authenticate(self, *, session: Session) -> bool | None:
        username, password, client_id = session.username, session.password, session.client_id
        if not username or password is None or not client_id:
            return False
        if username != GATEWAY_USERNAME and client_id != username:
            return False
        check: CredentialCheck = self.config.check
        try:
            return bool(await check(username, password, client_id))
        except Exception as exc:  # a failing check refuses; it never crashes the broker
            log.warning("broker_auth_check_failed", error_type=type(exc).__name__)
            return False


class SesameTopicPlugin(BaseTopicPlugin):
    """amqtt plugin: every publish, subscribe and delivery goes through ``device_may``."""

    @dataclass
    class Config:
        enabled: bool = True

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool | None:
        if session is None or topic is None or action is None:
            return False
        return device_may(session.username, action.value, topic)


class SesameControlPlugin(BasePlugin[BrokerContext]):
    """amqtt plugin: the gateway asks, on ``sesame/v1/control/disconnect``, that a device's
    live session be dropped (after its credentials were rotated or revoked)."""

    async def on_broker_message_received(self, *, client_id: str, message: Any) -> None:
        if getattr(message, "topic", None) != CONTROL_DISCONNECT:
            return
        session = self.context.get_session(client_id)
        if session is None or session.username != GATEWAY_USERNAME:
            return
        try:
            username = str(orjson.loads(bytes(message.data))["username"])
        except (ValueError, KeyError, TypeError):
            return
        closed = await disconnect_sessions(self.context._broker_instance, username)
        log.info("device_session_dropped", device_id=username, sessions=closed)


async def disconnect_sessions(broker: Broker, username: str) -> int:
    """Close every live session of ``username``.

    amqtt has no public API for it; this uses the calls of its own session take-over,
    which is why the amqtt version is pinned.
    """
    closed = 0
    for session, handler in list(broker._sessions.values()):
        if session.username == username and session.transitions.is_connected():
            await handler.handle_connection_closed()
            await handler.stop()
            closed += 1
    return closed


class _SnapshotDict(dict[str, Any]):
    """A dict whose iteration works on a copy: amqtt iterates its subscriptions across
    ``await`` points while other tasks add to them ("dictionary changed size during
    iteration" lost the message being broadcast)."""

    def __iter__(self) -> Any:
        return iter(list(super().keys()))

    def items(self) -> Any:
        return list(super().items())


class _BoundedReader(StreamReaderAdapter):
    """A connection's reader that refuses to read a packet body past ``limit`` bytes.

    amqtt reads a packet's body in one call whatever its declared length (up to 256 MB);
    asked for more than the limit, this reader reports the end of the stream instead, so
    amqtt closes the connection without reading or buffering the body.
    """

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        super().__init__(reader)
        self.limit = limit
        self.refused = False

    async def read(self, n: int = -1) -> bytes:
        if self.refused:
            return b""
        if n > self.limit:
            self.refused = True
            log.warning("mqtt_packet_too_large", size=n, limit=self.limit)
            self.feed_eof()
            return b""
        data: bytes = await super().read(n)
        return data


# What may wait behind a flood: events, their acknowledgements and state reports. All
# else (commands, results, presence, heartbeats, trust, time, control) goes first.
BULK_CHANNELS = frozenset({Channel.EVENTS, Channel.EVENTS_ACK, Channel.STATE})


def is_bulk(topic: str | None) -> bool:
    parsed = parse_topic(topic or "")
    return parsed is not None and parsed[1] in BULK_CHANNELS


# Urgent messages taken in a row while bulk ones wait, before one bulk message goes: urgent
# traffic (heartbeats of a large fleet) can delay events, never stop them.
URGENT_RUN = 16


class _Lanes:
    """Two FIFO lanes: ``popleft`` takes from the urgent lane first, but one bulk message
    after every ``URGENT_RUN`` urgent ones."""

    def __init__(self) -> None:
        self.urgent: deque[dict[str, Any]] = deque()
        self.bulk: deque[dict[str, Any]] = deque()
        self._run = 0

    def __len__(self) -> int:
        return len(self.urgent) + len(self.bulk)

    def append(self, broadcast: dict[str, Any]) -> None:
        (self.bulk if is_bulk(broadcast.get("topic")) else self.urgent).append(broadcast)

    def popleft(self) -> dict[str, Any]:
        if self.urgent and (not self.bulk or self._run < URGENT_RUN):
            self._run += 1
            return self.urgent.popleft()
        self._run = 0
        return self.bulk.popleft()


class _LanedQueue(asyncio.Queue[dict[str, Any]]):
    """amqtt's broadcast queue with a command lane.

    amqtt hands every published message to one queue, and one loop fans each out in
    turn; under a flood of events a result, a heartbeat or a command waits behind every
    event published before it (measured: 6,600 messages queued, a reader marked offline
    while its heartbeats waited). Here those go ahead of events, as on the gateway's two
    connections (``sesame.devices.gateway``); a steady stream of them lets one event through
    after every ``URGENT_RUN``. Order within each lane is kept.
    """

    def _init(self, maxsize: int) -> None:
        self._queue = _Lanes()

    def _put(self, item: dict[str, Any]) -> None:
        self._queue.append(item)

    def _get(self) -> dict[str, Any]:
        return self._queue.popleft()


class _SesameBroker(Broker):
    """amqtt 0.12.1 with its defects fixed, which is why its version is pinned.

    - amqtt sends a client, when it connects or subscribes, the retained messages matching
      *every* subscription in the broker (other clients' included) and those of refused
      subscriptions, without the topic plugins' say. A device could read every device's
      retained state. Here a client gets the retained messages of its own accepted
      subscriptions only, each passed through the access rule.
    - amqtt takes a CONNECT's client id over (dropping the live session's subscriptions,
      or overwriting its will and credentials) *before* it authenticates the CONNECT, and
      never checks the will. One refused CONNECT with a device's id silenced the device;
      a will on another device's topic was published as if the device had sent it. Here
      a CONNECT is judged first — credentials, then its will exactly as a PUBLISH — and a
      refused one leaves every existing session as it was. Only an accepted CONNECT takes
      a client id over, and it closes the previous connection (whose will then goes out)
      before the new session starts.
    - amqtt fans out every message from one queue in arrival order; here commands,
      results and presence go ahead of events (``_LanedQueue``).
    """

    max_packet_bytes = DEFAULT_MAX_PACKET_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _SnapshotDict()
        self._broadcast_queue = _LanedQueue()

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Session]:
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except (AMQTTError, MQTTError, NoDataError) as exc:
            await writer.close()
            raise AMQTTError(exc) from exc
        refusal = await self._refusal(session)
        if refusal is not None:
            log.info("mqtt_connect_refused", reason=refusal)
            session.parent = 0
            handler.attach(session, reader, writer)
            await handler.mqtt_connack_authorize(False)
            await writer.close()
            raise AMQTTError(f"CONNECT refused: {refusal}")
        session.sesame_admitted = True
        await self._take_over(session.client_id)
        # From here on, what amqtt does with an accepted CONNECT.
        if session.clean_session:
            await self._delete_session(session.client_id)
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            for name in (
                "will_flag",
                "will_message",
                "will_topic",
                "will_qos",
                "will_retain",
                "keep_alive",
                "username",
                "password",
            ):
                setattr(existing, name, getattr(session, name))
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        return handler, session

    async def _refusal(self, session: Session) -> str | None:
        """Why a CONNECT must be refused, or None to accept it."""
        if not session.client_id:
            return "no_client_id"
        listener = next(iter(self.listeners_config.values()))
        if not await super()._authenticate(session, listener):
            return "not_authorized"
        if not session.will_flag:
            if session.will_qos or session.will_retain:  # [MQTT-3.1.2-13], [MQTT-3.1.2-15]
                return "will_flags_without_will"
            return None
        topic = session.will_topic or ""
        if session.will_qos not in (0, 1, 2) or not topic or "#" in topic or "+" in topic:
            return "will_malformed"
        if topic.startswith("$") or not await self._topic_filtering(
            session, topic=topic, action=Action.PUBLISH
        ):
            return "will_not_permitted"
        return None

    async def _authenticate(self, session: Session, listener: Any) -> bool:
        # The CONNECT was judged in _initialize_client_session, before any take-over.
        return bool(getattr(session, "sesame_admitted", False))

    async def _stop_handler(self, handler: Any) -> None:
        """Stop a connection's handler, cancelling its reader again while it runs on.

        amqtt's reader waits for each packet with ``asyncio.wait_for``, which on Python
        3.11 swallows a cancellation that comes as a packet arrives; ``handler.stop()``
        then waited for a reader that went on reading, and the broker's shutdown hung
        (seen in the broker-restart test). After ``STOP_PATIENCE`` seconds the
        connection is closed under it."""
        stopping = asyncio.ensure_future(handler.stop())
        deadline = asyncio.get_running_loop().time() + STOP_PATIENCE
        while not stopping.done():
            await asyncio.wait([stopping], timeout=STOP_RECANCEL_SECONDS)
            reader = getattr(handler, "_reader_task", None)
            if stopping.done() or reader is None or reader.done():
                continue
            if asyncio.get_running_loop().time() > deadline:
                log.warning("mqtt_handler_stop_overran")
                writer = getattr(handler, "writer", None)
                transport = getattr(getattr(writer, "_writer", None), "transport", None)
                if transport is not None:
                    transport.abort()
            reader.cancel()
        with contextlib.suppress(asyncio.QueueEmpty):  # as amqtt's own
            stopping.result()

    async def _take_over(self, client_id: str) -> None:
        """Close the connection that holds ``client_id``, and wait until its session has
        ended (its will published), so that nothing of it comes after the new one."""
        current = self._sessions.get(client_id)
        if current is None or not current[0].transitions.is_connected():
            return
        previous, handler = current
        await handler.handle_connection_closed()
        for _ in range(100):
            if not previous.transitions.is_connected():
                return
            await asyncio.sleep(0.01)
        await handler.stop()

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        await self._client_connected(
            listener_name,
            _BoundedReader(reader, self.max_packet_bytes),
            StreamWriterAdapter(writer),
        )

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        subscribers = self._subscriptions.get(topic_filter, ())
        if not any(subscriber.client_id == session.client_id for subscriber, _ in subscribers):
            return
        handler = self._get_handler(session)
        if handler is None:
            return
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and await self._topic_filtering(
                session, topic=topic, action=Action.RECEIVE
            ):
                await handler.mqtt_publish(
                    retained.topic, retained.data, min(qos, retained.qos or qos), retain=True
                )


class EmbeddedBroker:
    """amqtt inside the Sesame process, bound to ``host:port``."""

    def __init__(
        self,
        bind: str,
        check: CredentialCheck,
        *,
        max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
    ) -> None:
        self.bind = bind
        self._broker = _SesameBroker(
            {
                "listeners": {"default": {"type": "tcp", "bind": bind, "max_connections": 0}},
                "timeout_disconnect_delay": 0,
                "plugins": {
                    f"{__name__}.SesameAuthPlugin": {"check": check},
                    f"{__name__}.SesameTopicPlugin": {"enabled": True},
                    f"{__name__}.SesameControlPlugin": {},
                },
            }
        )
        self._broker.max_packet_bytes = max_packet_bytes

    async def start(self) -> None:
        await self._broker.start()
        log.info("embedded_broker_started", bind=self.bind)

    async def stop(self) -> None:
        await self._broker.shutdown()

    async def disconnect(self, username: str) -> int:
        return await disconnect_sessions(self._broker, username)


# -- Mosquitto ---------------------------------------------------------------------------


@dataclass
class MosquittoConfig:
    """Files for a Mosquitto 2 broker that enforces Sesame's rules.

    Devices and the gateway connect to different listeners, each with its own password
    file (``per_listener_settings``):

    - on the devices' listeners (``listener``, and ``tls_listener`` when a certificate is
      given) only devices exist, and ``use_username_as_clientid`` makes a device's client
      id its username: no one can connect under another device's id and cut it off;
    - on the gateway's listener only the gateway's user exists, so no device can take a
      gateway replica's client id, whatever it is.

    Mosquitto itself cannot refuse a CONNECT for its will or a SUBSCRIBE for its filter
    with an ACL file: it checks a will when it would send it (and drops one the ACL does
    not allow), and grants any subscription but delivers only what the ACL lets the
    subscriber read (``docs/protocol.md``, section 2).
    """

    listener: str = "0.0.0.0:1883"
    gateway_listener: str = "127.0.0.1:1884"
    passwords: dict[str, str] = field(default_factory=dict)  # username -> $7$ hash
    # Started as root, Mosquitto switches to this user before it reads the 0600 password
    # files; `sesame broker config` sets the user that writes them.
    user: str | None = None
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES
    tls_listener: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def conf(self, directory: Path) -> str:
        lines = [
            "# Generated by `sesame broker config`; regenerate instead of editing.",
            "per_listener_settings true",
            *([f"user {self.user}"] if self.user else []),
            "set_tcp_nodelay true",
            "max_inflight_messages 100",
            # A client sending a larger packet is disconnected.
            f"max_packet_size {self.max_packet_bytes}",
            "persistence false",
            "",
            "# Devices: a device's client id is its username, its id.",
            *self._listener(self.listener, directory, devices=True),
        ]
        if self.tls_listener:
            if self.tls_cert is None or self.tls_key is None:
                raise ValueError("a TLS listener needs a certificate and its key")
            lines += [
                "# Devices over TLS.",
                *self._listener(self.tls_listener, directory, devices=True),
                f"certfile {self.tls_cert.resolve()}",
                f"keyfile {self.tls_key.resolve()}",
            ]
        lines += [
            "# The gateway replicas (SESAME_MQTT_URL): no device can sign in here.",
            *self._listener(self.gateway_listener, directory, devices=False),
        ]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _listener(address: str, directory: Path, *, devices: bool) -> list[str]:
        host, _, port = address.rpartition(":")
        prefix = "" if devices else "gateway-"
        return [
            f"listener {port} {host}" if host else f"listener {port}",
            *(["use_username_as_clientid true"] if devices else []),
            "allow_anonymous false",
            f"password_file {directory / (prefix + 'passwords')}",
            f"acl_file {directory / (prefix + 'acl')}",
            "",
        ]

    @staticmethod
    def acl() -> str:
        lines = [
            "# Generated by `sesame broker config`. %u is the connecting username,",
            "# which for a device is its id.",
        ]
        for channel in sorted(DEVICE_PUBLISHES):
            lines.append(f"pattern write {TOPIC_ROOT}/%u/{channel.value}")
        for channel in sorted(DEVICE_SUBSCRIBES):
            lines.append(f"pattern read {TOPIC_ROOT}/%u/{channel.value}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def gateway_acl() -> str:
        return "\n".join(
            [
                "# Generated by `sesame broker config`.",
                f"user {GATEWAY_USERNAME}",
                f"topic readwrite {SESAME_ROOT}#",
                "",
            ]
        )

    def password_file(self, *, gateway: bool = False) -> str:
        return "".join(
            f"{user}:{hashed}\n"
            for user, hashed in sorted(self.passwords.items())
            if (user == GATEWAY_USERNAME) == gateway
        )

    def write(self, directory: Path) -> Path:
        """Write ``mosquitto.conf``, the password files and ACLs; returns the conf's path."""
        directory.mkdir(parents=True, exist_ok=True)
        self.write_passwords(directory)
        _replace(directory / "acl", self.acl(), 0o644)
        _replace(directory / "gateway-acl", self.gateway_acl(), 0o644)
        _replace(directory / "mosquitto.conf", self.conf(directory.resolve()), 0o644)
        return directory / "mosquitto.conf"

    def write_passwords(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        _replace(directory / "passwords", self.password_file(), 0o600)
        _replace(directory / "gateway-passwords", self.password_file(gateway=True), 0o600)


def _replace(path: Path, text: str, mode: int) -> None:
    """Write a file so that a reader never sees it half written."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.chmod(mode)
    temporary.replace(path)


def reload_mosquitto(pid_file: Path) -> bool:
    """Ask a running Mosquitto to re-read its password and ACL files (SIGHUP)."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        log.warning("mosquitto_reload_failed", error_type=type(exc).__name__)
        return False
    return True


def device_username(device_id: UUID) -> str:
    return str(device_id)
