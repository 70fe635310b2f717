"""Stand-ins for every provider, served on localhost for the whole session, and a
notifier (router and senders) started on a runtime for one test with channels that
reach them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from sesame.kit.db import write_intent
from sesame.kit.egress import EgressPolicy
from sesame.notifications.channels.email import EmailChannel
from sesame.notifications.channels.fcm import FcmChannel
from sesame.notifications.channels.sms import SmsChannel
from sesame.notifications.channels.webhook import WebhookChannel
from sesame.notifications.channels.webpush import WebPushChannel
from sesame.notifications.install import Notifier, load_vapid_key, vapid_key
from sesame.notifications.repository import NotificationRepository
from sesame.notifications.testing.fcm import StandinServer
from sesame.notifications.testing.smtp import SmtpStandin
from sesame.notifications.testing.webhooks import WebhookReceiver
from sesame.notifications.testing.webpush import PushServiceStandin
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime
from tests.support import eventually

# The stand-ins listen on this machine: channels built outside a runtime reach them only
# because the allow-list says so, as an operator's would for an internal receiver.
STANDINS_ALLOWED = EgressPolicy.from_entries(["127.0.0.1"], enforced=True)


@dataclass
class Providers:
    fcm: StandinServer
    push: PushServiceStandin
    smtp: SmtpStandin
    smtp_port: int
    hooks: WebhookReceiver

    def channels(self, runtime: Runtime) -> dict[str, Any]:
        return {
            "fcm": FcmChannel(service_account=self.fcm.service_account, endpoint=self.fcm.url),
            "webpush": WebPushChannel(
                vapid_private_key=vapid_key(runtime),
                subject="mailto:ops@sesame.test",
                egress=runtime.egress,
            ),
            "email": EmailChannel(
                host="127.0.0.1", port=self.smtp_port, sender="sesame@sesame.test", starttls=False
            ),
            "webhook": WebhookChannel(egress=runtime.egress),
            "sms": SmsChannel(runtime.sms_sender),  # the test runtime's MemorySmsSender
        }

    def reset(self) -> None:
        self.fcm.standin.reset()
        self.push.deliveries.clear()  # its subscriptions stay: browsers keep them
        self.push.rejections.clear()
        self.smtp.envelopes.clear()
        self.hooks.reset([])


@pytest.fixture(scope="session")
async def providers() -> AsyncIterator[Providers]:
    fcm, push, smtp, hooks = (
        StandinServer(),
        PushServiceStandin(),
        SmtpStandin(),
        WebhookReceiver([]),
    )
    await fcm.start()
    await push.start()
    port = await smtp.start()
    await hooks.start()
    yield Providers(fcm, push, smtp, port, hooks)
    await hooks.stop()
    await smtp.stop()
    await push.stop()
    await fcm.stop()


@asynccontextmanager
async def notifying(runtime: Runtime, providers: Providers) -> AsyncIterator[Notifier]:
    """Route and send on ``runtime`` while the block runs, from the outbox's current end:
    events of earlier tests in the shared database are not this test's."""
    providers.reset()
    with write_intent():
        async with runtime.session_factory() as session:
            state = await NotificationRepository(session).state()
            state.outbox_cursor = await outbox.last_id(session)
            await session.commit()
    await load_vapid_key(runtime)
    notifier = Notifier(runtime, providers.channels(runtime))
    runtime.notifier = notifier
    notifier.start()
    try:
        yield notifier
    finally:
        await notifier.stop()
        runtime.notifier = None


async def mailed_code(providers: Providers, address: str, seconds: float = 15) -> str:
    """The confirmation code in the newest message the SMTP stand-in took for ``address``."""

    def latest() -> str | None:
        for envelope in reversed(providers.smtp.envelopes):
            if address in envelope.rcpt_tos:
                text = envelope.message.get_body(("plain",))
                found = re.search(r"\b[0-9]{8}\b", text.get_content() if text else "")
                if found:
                    return found.group(0)
        return None

    return str(await eventually(latest, seconds))
