"""Starting and stopping notifications with a process: the channels, the router (one
process at a time routes) and the senders (every process sends its share)."""

from __future__ import annotations

import asyncio
from contextlib import suppress

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

from sesame.jobs import service as jobs
from sesame.jobs.repository import JobRepository
from sesame.kit.db import write_intent
from sesame.kit.logging import get_logger
from sesame.notifications import alerts, campaigns  # noqa: F401  (their job handlers)
from sesame.notifications.channels.base import Channel
from sesame.notifications.channels.console import ConsoleChannel
from sesame.notifications.channels.email import EmailChannel
from sesame.notifications.channels.fcm import FcmChannel, load_service_account
from sesame.notifications.channels.sms import SmsChannel
from sesame.notifications.channels.webhook import WebhookChannel
from sesame.notifications.channels.webpush import WebPushChannel, vapid_key_from_secret
from sesame.notifications.router import run_router
from sesame.notifications.sender import Sender, run_sender
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime
from sesame.sealing.service import earliest_key_id, platform_secret

log = get_logger("sesame.notifications")

EVERY_MINUTE = "* * * * *"


VAPID_KEY = "vapid"


async def load_vapid_key(runtime: Runtime) -> EllipticCurvePrivateKey:
    """The server's VAPID key, loaded once per process.

    Browsers' push subscriptions are bound to it, so it must survive a change of master
    secret: it is stored sealed (``sesame.sealing``). It used to be derived from the
    secret and stored nowhere; the first start that finds none stores the one derived
    from the secret the deployment used until then, even when the secret changes in the
    same restart."""

    async def derived_as_before() -> bytes:
        return runtime.keys.ring.derive(await earliest_key_id(runtime), VAPID_KEY)

    if runtime.vapid_private_key is None:
        seed = await platform_secret(runtime, VAPID_KEY, derived_as_before)
        runtime.vapid_private_key = vapid_key_from_secret(seed)
    key: EllipticCurvePrivateKey = runtime.vapid_private_key
    return key


def vapid_key(runtime: Runtime) -> EllipticCurvePrivateKey:
    """The VAPID key ``load_vapid_key`` loaded."""
    if runtime.vapid_private_key is None:
        raise RuntimeError("the VAPID key is not loaded yet (await load_vapid_key)")
    key: EllipticCurvePrivateKey = runtime.vapid_private_key
    return key


def build_channels(runtime: Runtime) -> dict[str, Channel]:
    """A channel per kind, from the settings; what is not configured goes to the log."""
    settings = runtime.settings
    timeout = settings.notify_timeout_seconds
    channels: dict[str, Channel] = {
        "webpush": WebPushChannel(
            vapid_private_key=vapid_key(runtime),
            subject=settings.notify_webpush_subject,
            timeout_seconds=timeout,
            egress=runtime.egress,
        ),
        "webhook": WebhookChannel(timeout_seconds=timeout, egress=runtime.egress),
        "sms": SmsChannel(runtime.sms_sender),
    }
    if settings.notify_fcm_service_account is not None:
        channels["fcm"] = FcmChannel(
            service_account=load_service_account(
                settings.notify_fcm_service_account.get_secret_value()
            ),
            endpoint=settings.notify_fcm_endpoint,
            concurrency=settings.notify_fcm_concurrency,
            timeout_seconds=timeout,
        )
    else:
        channels["fcm"] = ConsoleChannel("fcm")
    if settings.notify_smtp_host:
        password = settings.notify_smtp_password
        channels["email"] = EmailChannel(
            host=settings.notify_smtp_host,
            port=settings.notify_smtp_port,
            sender=settings.notify_smtp_from,
            username=settings.notify_smtp_username,
            password=password.get_secret_value() if password else None,
            starttls=settings.notify_smtp_starttls,
            timeout_seconds=timeout,
        )
    else:
        channels["email"] = ConsoleChannel("email")
    unconfigured = sorted(n for n, c in channels.items() if isinstance(c, ConsoleChannel))
    if unconfigured:
        log.info("notification_channels_on_console", channels=unconfigured)
    return channels


class Notifier:
    """A process's notification machinery. ``queued()`` wakes its senders at once."""

    def __init__(self, runtime: Runtime, channels: dict[str, Channel] | None = None) -> None:
        self.runtime = runtime
        self.channels = channels if channels is not None else build_channels(runtime)
        self.sender = Sender(runtime, self.channels)
        self.route_wake = asyncio.Event()
        self.send_wake = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def queued(self) -> None:
        self.send_wake.set()

    def events_committed(self, _topics: frozenset[str]) -> None:
        self.route_wake.set()

    def start(self) -> None:
        self._stop_listening = outbox.on_commit(self.events_committed)
        self.tasks.append(
            asyncio.create_task(run_router(self.runtime, self.route_wake, self.queued))
        )
        for _ in range(self.runtime.settings.notify_senders):
            self.tasks.append(asyncio.create_task(run_sender(self.sender, self.send_wake)))

    async def stop(self) -> None:
        self._stop_listening()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        for channel in self.channels.values():
            with suppress(Exception):
                await channel.aclose()


async def start_notifications(runtime: Runtime) -> Notifier | None:
    if not runtime.settings.notify_enabled:
        return None
    await load_vapid_key(runtime)
    notifier = runtime.notifier or Notifier(runtime)
    runtime.notifier = notifier
    notifier.start()
    return notifier


async def stop_notifications(notifier: Notifier | None, runtime: Runtime) -> None:
    if notifier is None:
        return
    await notifier.stop()
    runtime.notifier = None


async def install_jobs(runtime: Runtime) -> None:
    """The alert checks, scheduled once for the installation."""
    with write_intent():
        async with runtime.session_factory() as session:
            if await JobRepository(session).by_key(alerts.ALERTS_JOB) is None:
                await jobs.schedule(
                    session,
                    runtime,
                    alerts.ALERTS_JOB,
                    key=alerts.ALERTS_JOB,
                    cron=EVERY_MINUTE,
                    time_zone="UTC",
                )
            await session.commit()
