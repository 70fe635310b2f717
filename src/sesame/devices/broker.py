"""MQTT brokers: the embedded one, and a generated configuration for Mosquitto.

Both enforce the same two rules, which the protocol document states:

1. A device connects only with its own credentials: username and client id are its
   device id, the password its secret. Secrets are stored in Mosquitto's password-file
   form (PBKDF2-SHA512), so one stored hash serves both brokers.
2. A device publishes only on its own device channels and subscribes only to the
   channels the gateway sends it (``DEVICE_PUBLISHES`` / ``DEVICE_SUBSCRIBES``); it can
   never subscribe to ``#`` or to another device. The gateway's own user may use the
   whole ``sesame/v1/`` tree.

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
import hashlib
import hmac
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker, BrokerContext
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin
from amqtt.session import Session

from sesame.devices.protocol import (
    DEVICE_PUBLISHES,
    DEVICE_SUBSCRIBES,
    GATEWAY_USERNAME,
    TOPIC_ROOT,
    parse_topic,
)
from sesame.kit.logging import get_logger

log = get_logger("sesame.broker")

SESAME_ROOT = "sesame/v1/"
CONTROL_DISCONNECT = SESAME_ROOT + "control/disconnect"
PBKDF2_ITERATIONS = 101  # Mosquitto's own default for password files
SALT_BYTES = 12
DEFAULT_MAX_PACKET_BYTES = 1024 * 1024


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


class _SesameBroker(Broker):
    """amqtt 0.12.1 with two defects fixed, which is why its version is pinned.

    amqtt sends a client, when it connects or subscribes, the retained messages matching
    *every* subscription in the broker (other clients' included) and those of refused
    subscriptions, without the topic plugins' say. A device could read every device's
    retained state. Here a client gets the retained messages of its own accepted
    subscriptions only, each passed through the access rule.
    """

    max_packet_bytes = DEFAULT_MAX_PACKET_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _SnapshotDict()

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
    """Files for a Mosquitto 2 broker that enforces Sesame's rules."""

    listener: str = "0.0.0.0:1883"
    passwords: dict[str, str] = field(default_factory=dict)  # username -> $7$ hash
    # Started as root, Mosquitto switches to this user (its default: "mosquitto"), which
    # must be able to read the password file.
    user: str | None = None
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES

    def conf(self, directory: Path) -> str:
        host, _, port = self.listener.rpartition(":")
        return "\n".join(
            [
                "# Generated by `sesame broker config`; regenerate instead of editing.",
                "per_listener_settings false",
                *([f"user {self.user}"] if self.user else []),
                f"listener {port} {host}" if host else f"listener {port}",
                "allow_anonymous false",
                f"password_file {directory / 'passwords'}",
                f"acl_file {directory / 'acl'}",
                "set_tcp_nodelay true",
                "max_inflight_messages 100",
                # A client sending a larger packet is disconnected.
                f"max_packet_size {self.max_packet_bytes}",
                "persistence false",
                "",
            ]
        )

    @staticmethod
    def acl() -> str:
        lines = [
            "# Generated by `sesame broker config`. %u is the connecting username,",
            "# which for a device is its id.",
            f"user {GATEWAY_USERNAME}",
            f"topic readwrite {SESAME_ROOT}#",
            "",
        ]
        for channel in sorted(DEVICE_PUBLISHES):
            lines.append(f"pattern write {TOPIC_ROOT}/%u/{channel.value}")
        for channel in sorted(DEVICE_SUBSCRIBES):
            lines.append(f"pattern read {TOPIC_ROOT}/%u/{channel.value}")
        return "\n".join(lines) + "\n"

    def password_file(self) -> str:
        return "".join(f"{user}:{hashed}\n" for user, hashed in sorted(self.passwords.items()))

    def write(self, directory: Path) -> Path:
        """Write ``mosquitto.conf``, ``passwords`` and ``acl``; returns the conf's path."""
        directory.mkdir(parents=True, exist_ok=True)
        self.write_passwords(directory)
        _replace(directory / "acl", self.acl(), 0o644)
        _replace(directory / "mosquitto.conf", self.conf(directory.resolve()), 0o644)
        return directory / "mosquitto.conf"

    def write_passwords(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        _replace(directory / "passwords", self.password_file(), 0o600)


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
