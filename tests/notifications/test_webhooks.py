"""Webhooks: signed per Standard Webhooks, checked by a receiver with its own verification."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from sesame.notifications.channels.base import Message, Outcome
from sesame.notifications.channels.webhook import WebhookChannel, new_secret
from sesame.notifications.testing.webhooks import WebhookReceiver, signature_matches
from tests.notifications.conftest import STANDINS_ALLOWED

SECRET = new_secret()


@pytest.fixture(scope="module")
async def running_receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver([SECRET]) as partner:
        yield partner


@pytest.fixture
def receiver(running_receiver: WebhookReceiver) -> WebhookReceiver:
    running_receiver.reset([SECRET])
    return running_receiver


@pytest.fixture
async def channel() -> AsyncIterator[WebhookChannel]:
    webhooks = WebhookChannel(egress=STANDINS_ALLOWED)
    yield webhooks
    await webhooks.aclose()


def message(
    url: str, *secrets: str, transaction_id: str | None = None, door: str = "A-101"
) -> Message:
    return Message(
        delivery_id=uuid.uuid4(),
        transaction_id=transaction_id or f"msg_{uuid.uuid4().hex}",
        address=url,
        title="",
        body="",
        category="access",
        locale="en",
        event_type="door.opened",
        secrets=secrets or (SECRET,),
        payload={"door": door, "method": "nfc", "floor": 3},
    )


async def test_a_signed_webhook_is_verified_by_the_receiver(
    receiver: WebhookReceiver, channel: WebhookChannel
) -> None:
    """The body, headers and signature are what the specification tells a receiver to expect."""
    sent = message(receiver.url("/hooks/sesame"))

    [result] = await channel.send_many([sent])

    assert (result.outcome, result.code) == (Outcome.SENT, None)
    [event] = receiver.events
    assert event.path == "/hooks/sesame"
    assert event.msg_id == sent.transaction_id
    assert event.body["type"] == "door.opened"
    assert event.body["data"] == {"door": "A-101", "method": "nfc", "floor": 3}
    assert datetime.fromisoformat(event.body["timestamp"]).tzinfo is not None
    assert b" " not in event.raw_body  # compact JSON
    assert abs(event.timestamp - time.time()) < 300
    assert event.headers["content-type"] == "application/json"
    assert event.headers["user-agent"] == "Sesame-Webhooks/1"
    assert signature_matches(SECRET, event.headers, event.raw_body)
    assert not signature_matches(SECRET, event.headers, event.raw_body + b" ")


async def test_during_a_rotation_both_signatures_verify(
    receiver: WebhookReceiver, channel: WebhookChannel
) -> None:
    """Signed with the old and the new secret, a partner holding either one accepts."""
    old, new = new_secret(), new_secret()
    receiver.reset([new])
    [on_new] = await channel.send_many([message(receiver.url(), old, new)])
    [event] = receiver.events
    receiver.reset([old])
    [on_old] = await channel.send_many([message(receiver.url(), old, new)])

    assert on_new.outcome is on_old.outcome is Outcome.SENT
    assert len(event.signatures) == 2
    assert all(s.startswith("v1,") for s in event.signatures)
    assert signature_matches(old, event.headers, event.raw_body)
    assert signature_matches(new, event.headers, event.raw_body)
    assert len(receiver.events) == 1


async def test_a_wrong_secret_is_refused_by_the_receiver(
    receiver: WebhookReceiver, channel: WebhookChannel
) -> None:
    """The receiver really checks: a signature made with another secret gets 401."""
    [result] = await channel.send_many([message(receiver.url(), new_secret())])

    assert (result.outcome, result.code) == (Outcome.RETRY, "http_401")
    assert receiver.events == []
    assert [(r.status, r.reason) for r in receiver.rejections] == [(401, "no signature matches")]


def test_the_receivers_verification_agrees_with_the_library() -> None:
    """Our own HMAC check accepts the library's signature and nothing else."""
    body = b'{"type":"door.opened"}'
    timestamp = int(time.time())
    signature = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(timestamp, UTC), body.decode())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v2,AAAA {signature}",
    }

    assert signature_matches(SECRET, headers, body)
    assert not signature_matches(new_secret(), headers, body)
    assert not signature_matches(SECRET, {**headers, "webhook-id": "msg_2"}, body)
    assert not signature_matches(SECRET, {**headers, "webhook-timestamp": "1"}, body)


@pytest.mark.parametrize(
    ("status", "headers", "outcome", "retry_after"),
    [
        (503, {"Retry-After": "30"}, Outcome.RETRY, 30.0),
        (500, {}, Outcome.RETRY, None),
        (429, {"Retry-After": "5"}, Outcome.RETRY, 5.0),
        (408, {}, Outcome.RETRY, None),
        (400, {}, Outcome.RETRY, None),
        (410, {}, Outcome.GONE, None),
    ],
)
async def test_partner_answers_are_classified(
    receiver: WebhookReceiver,
    channel: WebhookChannel,
    status: int,
    headers: dict[str, str],
    outcome: Outcome,
    retry_after: float | None,
) -> None:
    """Only 410 stops deliveries; every other failure is retried, with its code kept."""
    receiver.fail_next(1, status, headers)

    [result] = await channel.send_many([message(receiver.url())])

    assert (result.outcome, result.code, result.retry_after) == (
        outcome,
        f"http_{status}",
        retry_after,
    )
    assert receiver.events == []


async def test_a_failing_path_fails_until_it_recovers(
    receiver: WebhookReceiver, channel: WebhookChannel
) -> None:
    """A path told to fail keeps failing; other paths on the same host are unaffected."""
    receiver.fail_path("/broken", 503)

    results = await channel.send_many(
        [message(receiver.url("/broken")), message(receiver.url("/fine"))]
    )

    assert [(r.outcome, r.code) for r in results] == [
        (Outcome.RETRY, "http_503"),
        (Outcome.SENT, None),
    ]
    assert [e.path for e in receiver.events] == ["/fine"]


async def test_redirects_are_not_followed(
    receiver: WebhookReceiver, channel: WebhookChannel
) -> None:
    """A signed request goes only to the registered URL; a redirect fails the delivery."""
    receiver.fail_path("/moved", 301, {"Location": receiver.url("/elsewhere")})

    [result] = await channel.send_many([message(receiver.url("/moved"))])

    assert (result.outcome, result.code) == (Outcome.REJECTED, "http_301")
    assert receiver.attempts == 1
    assert receiver.events == []


async def test_a_resend_carries_the_same_id_and_is_deduplicated(
    receiver: WebhookReceiver, channel: WebhookChannel
) -> None:
    """The same transaction id twice is one event and one duplicate at the receiver."""
    first = message(receiver.url(), transaction_id="msg_fixed_1")
    again = message(receiver.url(), transaction_id="msg_fixed_1")

    results = await channel.send_many([first]) + await channel.send_many([again])

    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT]
    assert receiver.attempts == 2
    assert len(receiver.events) == 1
    assert receiver.duplicates == 1


async def test_timeouts_and_refused_connections_are_retried(receiver: WebhookReceiver) -> None:
    """A partner too slow to answer or not listening at all is tried again later."""
    receiver.delay_seconds = 0.5
    impatient = WebhookChannel(timeout_seconds=0.1, egress=STANDINS_ALLOWED)
    try:
        [slow] = await impatient.send_many([message(receiver.url())])
        [down] = await impatient.send_many([message("http://127.0.0.1:9/hooks")])
    finally:
        await impatient.aclose()

    assert (slow.outcome, slow.code) == (Outcome.RETRY, "timeout")
    assert (down.outcome, down.code) == (Outcome.RETRY, "connection_error")


async def test_concurrency_is_bounded(receiver: WebhookReceiver) -> None:
    """Eight webhooks with a limit of two never put more than two at the partner."""
    receiver.delay_seconds = 0.05
    webhooks = WebhookChannel(concurrency=2, egress=STANDINS_ALLOWED)
    try:
        results = await webhooks.send_many([message(receiver.url()) for _ in range(8)])
    finally:
        await webhooks.aclose()

    assert [r.outcome for r in results] == [Outcome.SENT] * 8
    assert 1 <= receiver.max_in_flight <= 2
    assert len(receiver.events) == 8


async def test_unsendable_messages_are_rejected_without_a_request(
    receiver: WebhookReceiver, channel: WebhookChannel
) -> None:
    """No secret means no signature, and nothing is sent unsigned; nor to a non-HTTP URL."""
    unsigned = Message(**{**message(receiver.url()).__dict__, "secrets": ()})

    results = await channel.send_many([unsigned, message("ftp://partner.example/hooks")])

    assert [(r.outcome, r.code) for r in results] == [
        (Outcome.REJECTED, "no_secret"),
        (Outcome.REJECTED, "invalid_url"),
    ]
    assert receiver.attempts == 0


def test_new_secrets_are_whsec_and_random() -> None:
    """A secret is ``whsec_`` and at least 24 random bytes, never the same twice."""
    first, second = new_secret(), new_secret()

    assert first.startswith("whsec_")
    assert first != second
    assert 24 <= len(base64.b64decode(first.removeprefix("whsec_"))) <= 32
