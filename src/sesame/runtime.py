"""What a running Sesame process holds: settings, database, clock, keys and outside services.

Built once at start-up (``build_runtime``) and reached from requests through
``request.app.state.runtime``; tests build their own with a frozen clock and an SMS
sender that records instead of sending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sesame.auth.cache import CredentialCache
from sesame.devices.hooks import DeviceHooks
from sesame.kit.clock import Clock, SystemClock
from sesame.kit.db import create_engine, create_read_session_factory, create_session_factory
from sesame.kit.egress import EgressPolicy
from sesame.kit.security import PasswordHashing, b64url, derive_key
from sesame.settings import Settings


@dataclass(frozen=True)
class Keys:
    """Purpose-bound keys derived from ``SESAME_SECRET_KEY``."""

    access_tokens: bytes
    one_time_codes: bytes
    idempotency: bytes
    mqtt_gateway_password: str

    @classmethod
    def derive(cls, secret: str) -> Keys:
        return cls(
            access_tokens=derive_key(secret, "access-tokens"),
            one_time_codes=derive_key(secret, "one-time-codes"),
            idempotency=derive_key(secret, "idempotency-records"),
            mqtt_gateway_password=b64url(derive_key(secret, "mqtt-gateway")),
        )


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    read_session_factory: async_sessionmaker[AsyncSession]
    clock: Clock
    keys: Keys
    sms_sender: Any
    credential_cache: CredentialCache
    passwords: PasswordHashing
    # Where requests to user-supplied URLs may go (tests swap it for a stricter one).
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    # Started by the app's lifespan when devices are enabled.
    device_hooks: DeviceHooks = field(default_factory=DeviceHooks)
    gateway: Any = None
    broker: Any = None
    simulators: Any = None
    ledger: Any = None  # sesame.ledger.service.Ledger, when the ledger is enabled
    notifier: Any = None  # sesame.notifications.install.Notifier, when notifications run

    async def close(self) -> None:
        closer = getattr(self.sms_sender, "aclose", None)
        if closer is not None:
            await closer()
        await self.engine.dispose()


def build_runtime(
    settings: Settings, *, clock: Clock | None = None, sms_sender: Any = None
) -> Runtime:
    from sesame.auth.sms import sender_from_settings

    engine = create_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        timeout_seconds=settings.database_timeout_seconds,
    )
    return Runtime(
        settings=settings,
        engine=engine,
        session_factory=create_session_factory(engine),
        read_session_factory=create_read_session_factory(engine),
        clock=clock or SystemClock(),
        keys=Keys.derive(settings.secret_key.get_secret_value()),
        sms_sender=sms_sender or sender_from_settings(settings),
        credential_cache=CredentialCache(settings.auth_cache_seconds),
        passwords=PasswordHashing(
            time_cost=settings.password_time_cost, memory_kib=settings.password_memory_kib
        ),
        egress=settings.egress_policy(),
    )
