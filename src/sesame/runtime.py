"""What a running Sesame process holds: settings, database, clock, keys and outside services.

Built once at start-up (``build_runtime``) and reached from requests through
``request.app.state.runtime``; tests build their own with a frozen clock and an SMS
sender that records instead of sending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sesame.auth.cache import CredentialCache
from sesame.devices.hooks import DeviceHooks
from sesame.kit.clock import Clock, SystemClock
from sesame.kit.db import create_engine, create_read_session_factory, create_session_factory
from sesame.kit.egress import EgressPolicy
from sesame.kit.keyring import KeyRing, PurposeKeys
from sesame.kit.security import PasswordHashing, b64url
from sesame.settings import Settings


@dataclass(frozen=True)
class Keys:
    """Purpose-bound keys under ``SESAME_SECRET_KEY`` and the previous secrets still
    accepted for reading (``SESAME_SECRET_KEYS_PREVIOUS``; see ``sesame.kit.keyring``).

    What must outlive a change of secret — the ledger's key, sites' signing keys, the
    VAPID key — is stored sealed, never derived, so that re-sealing keeps it the same."""

    ring: KeyRing
    access_tokens: PurposeKeys
    one_time_codes: PurposeKeys
    idempotency: PurposeKeys  # idempotency records and the sealed params of attempts
    pin_codes: PurposeKeys
    site_signing_keys: PurposeKeys
    ledger_key: PurposeKeys
    webhook_secrets: PurposeKeys
    platform_keys: PurposeKeys  # the VAPID key
    destination_confirmation: PurposeKeys  # codes that confirm an e-mail destination
    # The gateway signs in to the broker with the current secret's; brokers accept any.
    mqtt_gateway_password: str
    mqtt_gateway_passwords: tuple[str, ...]

    @classmethod
    def derive(cls, secret: str, previous: Sequence[str] = ()) -> Keys:
        ring = KeyRing(secret, previous)
        gateway = ring.purpose("mqtt-gateway")
        return cls(
            ring=ring,
            access_tokens=ring.purpose("access-tokens"),
            one_time_codes=ring.purpose("one-time-codes"),
            idempotency=ring.purpose("idempotency-records"),
            pin_codes=ring.purpose("pin-codes"),
            site_signing_keys=ring.purpose("site-signing-keys"),
            ledger_key=ring.purpose("ledger-key"),
            webhook_secrets=ring.purpose("webhook-secrets"),
            platform_keys=ring.purpose("platform-keys"),
            destination_confirmation=ring.purpose("destination-confirmation"),
            mqtt_gateway_password=b64url(gateway.current.key),
            mqtt_gateway_passwords=tuple(b64url(k.key) for k in gateway.keys),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Keys:
        return cls.derive(
            settings.secret_key.get_secret_value(),
            [p.get_secret_value() for p in settings.secret_keys_previous],
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
    vapid_private_key: Any = None  # loaded by sesame.notifications.install.load_vapid_key

    async def close(self) -> None:
        closer = getattr(self.sms_sender, "aclose", None)
        if closer is not None:
            await closer()
        await self.engine.dispose()


def build_runtime(
    settings: Settings, *, clock: Clock | None = None, sms_sender: Any = None
) -> Runtime:
    from sesame.auth.sms import sender_from_settings

    settings.require("secret")  # nothing is sealed or signed with the public key
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
        keys=Keys.from_settings(settings),
        sms_sender=sms_sender or sender_from_settings(settings),
        credential_cache=CredentialCache(settings.auth_cache_seconds),
        passwords=PasswordHashing(
            time_cost=settings.password_time_cost, memory_kib=settings.password_memory_kib
        ),
        egress=settings.egress_policy(),
    )
