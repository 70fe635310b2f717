"""Web Push: what reaches the stand-in push service decrypts to what was sent, VAPID holds."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from sesame.notifications.channels.base import Message, Outcome
from sesame.notifications.channels.webpush import (
    WebPushChannel,
    encrypt_payload,
    origin_of,
    topic_for,
    vapid_key_from_secret,
    vapid_public_key_b64,
)
from sesame.notifications.testing.webpush import BrowserSubscription, PushServiceStandin
from tests.notifications.conftest import STANDINS_ALLOWED

SUBJECT = "mailto:ops@sesame.test"


@pytest.fixture(scope="module")
async def running_push() -> AsyncIterator[PushServiceStandin]:
    async with PushServiceStandin() as service:
        yield service


@pytest.fixture
def push(running_push: PushServiceStandin) -> PushServiceStandin:
    running_push.reset()
    return running_push


@pytest.fixture
def vapid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def channel(vapid_key: ec.EllipticCurvePrivateKey) -> AsyncIterator[WebPushChannel]:
    webpush = WebPushChannel(vapid_key, SUBJECT, egress=STANDINS_ALLOWED)
    yield webpush
    await webpush.aclose()


def message(
    subscription: BrowserSubscription,
    *,
    category: str = "doorbell",
    transaction_id: str | None = None,
    body: str = "누군가 1층 현관에서 호출했습니다",
) -> Message:
    return Message(
        delivery_id=uuid.uuid4(),
        transaction_id=transaction_id or uuid.uuid4().hex,
        address=subscription.endpoint,
        title="Doorbell",
        body=body,
        category=category,
        locale="ko",
        event_type="doorbell.rang",
        data={"door": "A-101"},
        keys=subscription.keys,
    )


class TamperingTransport(httpx.AsyncBaseTransport):
    """Flips the last byte of every body on the way out: the GCM tag no longer matches."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = bytearray(await request.aread())
        body[-1] ^= 0x01
        tampered = httpx.Request(
            request.method, request.url, headers=request.headers, content=bytes(body)
        )
        return await self._inner.handle_async_request(tampered)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_batch_decrypts_at_every_subscription_with_vapid_verified(
    push: PushServiceStandin,
    channel: WebPushChannel,
    vapid_key: ec.EllipticCurvePrivateKey,
) -> None:
    """Each subscription gets its own ciphertext, which only its browser keys can open."""
    server_key = vapid_public_key_b64(vapid_key)
    subscriptions = [push.subscribe(application_server_key=server_key) for _ in range(3)]
    messages = [
        message(subscriptions[0], category="doorbell"),
        message(subscriptions[1], category="parcel"),
        message(subscriptions[2], category="security"),
    ]

    results = await channel.send_many(messages)

    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert all((r.provider_id or "").startswith(f"{push.origin}/messages/") for r in results)
    for subscription, sent in zip(subscriptions, messages, strict=True):
        assert push.delivered_to(subscription) == [
            {
                "title": "Doorbell",
                "body": sent.body,
                "category": sent.category,
                "transaction_id": sent.transaction_id,
                "data": {"door": "A-101"},
            }
        ]
    by_subscription = {d.subscription_id: d for d in push.deliveries}
    first, second, third = (by_subscription[s.id] for s in subscriptions)
    assert first.vapid_claims["aud"] == push.origin
    assert first.vapid_claims["sub"] == SUBJECT
    assert first.vapid_key == server_key
    assert (first.urgency, second.urgency, third.urgency) == ("high", "normal", "high")
    assert first.ttl == 86400
    assert first.topic == messages[0].transaction_id  # 32 hex characters fit as they are
    assert push.rejections == []


async def test_a_resend_keeps_its_topic_even_for_long_ids(
    push: PushServiceStandin, channel: WebPushChannel
) -> None:
    """A UUID with hyphens is 36 characters: it is reduced, the same way each time."""
    subscription = push.subscribe()
    transaction_id = str(uuid.uuid4())

    first = await channel.send_many([message(subscription, transaction_id=transaction_id)])
    again = await channel.send_many([message(subscription, transaction_id=transaction_id)])

    assert first[0].outcome is again[0].outcome is Outcome.SENT
    topics = [d.topic for d in push.deliveries]
    assert topics[0] == topics[1] == topic_for(transaction_id)
    assert topics[0] is not None
    assert len(topics[0]) <= 32
    assert topic_for(str(uuid.uuid4())) != topics[0]


async def test_expired_and_unknown_subscriptions_are_gone(
    push: PushServiceStandin, channel: WebPushChannel
) -> None:
    """410 (unsubscribed) and 404 (never known) both deactivate the destination."""
    live, expired = push.subscribe(), push.subscribe()
    push.expire(expired)
    unknown = message(live)
    unknown = Message(**{**unknown.__dict__, "address": f"{push.origin}/push/nobody"})

    results = await channel.send_many([message(expired), unknown, message(live)])

    assert [(r.outcome, r.code) for r in results] == [
        (Outcome.GONE, "http_410"),
        (Outcome.GONE, "http_404"),
        (Outcome.SENT, None),
    ]
    assert [r.status for r in push.rejections] == [410, 404]


@pytest.mark.parametrize(
    ("status", "headers", "outcome", "code", "retry_after"),
    [
        (429, {"Retry-After": "120"}, Outcome.RETRY, "http_429", 120.0),
        (503, {}, Outcome.RETRY, "http_503", None),
        (413, {}, Outcome.REJECTED, "too_large", None),
        (400, {}, Outcome.REJECTED, "http_400", None),
        (401, {}, Outcome.REJECTED, "http_401", None),
    ],
)
async def test_push_service_answers_are_classified(
    push: PushServiceStandin,
    channel: WebPushChannel,
    status: int,
    headers: dict[str, str],
    outcome: Outcome,
    code: str,
    retry_after: float | None,
) -> None:
    """Throttling and outages are retried (when the service says); bad requests are not."""
    push.answer_next(status, headers)

    [result] = await channel.send_many([message(push.subscribe())])

    assert (result.outcome, result.code, result.retry_after) == (outcome, code, retry_after)


async def test_concurrency_is_bounded(push: PushServiceStandin) -> None:
    """Twelve messages with a limit of three never put more than three at the service."""
    push.delay_seconds = 0.05
    webpush = WebPushChannel(
        ec.generate_private_key(ec.SECP256R1()), SUBJECT, concurrency=3, egress=STANDINS_ALLOWED
    )
    subscription = push.subscribe()
    try:
        results = await webpush.send_many([message(subscription) for _ in range(12)])
    finally:
        await webpush.aclose()

    assert [r.outcome for r in results] == [Outcome.SENT] * 12
    assert 2 <= push.max_in_flight <= 3


async def test_a_tampered_body_fails_decryption_at_the_stand_in(push: PushServiceStandin) -> None:
    """The stand-in really decrypts: one flipped byte and it refuses the message."""
    client = httpx.AsyncClient(transport=TamperingTransport())
    webpush = WebPushChannel(
        ec.generate_private_key(ec.SECP256R1()), SUBJECT, client=client, egress=STANDINS_ALLOWED
    )
    try:
        [result] = await webpush.send_many([message(push.subscribe())])
    finally:
        await client.aclose()

    assert (result.outcome, result.code) == (Outcome.REJECTED, "http_400")
    assert push.deliveries == []
    assert [r.reason for r in push.rejections] == ["payload does not decrypt to JSON"]


async def test_a_key_derived_from_a_secret_is_stable_and_browsers_accept_it(
    push: PushServiceStandin,
) -> None:
    """The same master secret gives the same applicationServerKey across restarts."""
    seed = bytes(range(32))
    key, again = vapid_key_from_secret(seed), vapid_key_from_secret(seed)
    other = vapid_key_from_secret(bytes(range(1, 33)))
    public = vapid_public_key_b64(key)
    raw = base64.urlsafe_b64decode(public + "=" * (-len(public) % 4))

    assert key.private_numbers().private_value == again.private_numbers().private_value
    assert vapid_public_key_b64(other) != public
    assert len(raw) == 65
    assert raw[0] == 0x04
    with pytest.raises(ValueError, match="32 bytes"):
        vapid_key_from_secret(b"short")

    subscription = push.subscribe(application_server_key=public)
    derived = WebPushChannel(key, SUBJECT, egress=STANDINS_ALLOWED)
    stranger = WebPushChannel(other, SUBJECT, egress=STANDINS_ALLOWED)
    try:
        [accepted] = await derived.send_many([message(subscription)])
        [refused] = await stranger.send_many([message(subscription)])
    finally:
        await derived.aclose()
        await stranger.aclose()

    assert accepted.outcome is Outcome.SENT
    assert (refused.outcome, refused.code) == (Outcome.REJECTED, "http_403")


async def test_oversized_and_malformed_messages_are_refused_before_sending(
    push: PushServiceStandin, channel: WebPushChannel
) -> None:
    """A payload past 4 KB or a subscription without valid keys never reaches the service."""
    subscription = push.subscribe()
    too_big = message(subscription, body="x" * 5000)
    bad_keys = Message(**{**message(subscription).__dict__, "keys": {"p256dh": "AA", "auth": ""}})

    results = await channel.send_many([too_big, bad_keys])

    assert [(r.outcome, r.code) for r in results] == [
        (Outcome.REJECTED, "too_large"),
        (Outcome.REJECTED, "invalid_subscription"),
    ]
    assert push.deliveries == []
    assert push.rejections == []


async def test_vapid_audience_is_the_endpoint_origin_and_tokens_are_reused(
    push: PushServiceStandin, channel: WebPushChannel
) -> None:
    """``aud`` is scheme://host[:port] only; one token per origin serves many messages."""
    assert origin_of("https://fcm.googleapis.com/fcm/send/abc:def") == "https://fcm.googleapis.com"
    assert origin_of("https://push.example:8443/x?y=1") == "https://push.example:8443"
    assert origin_of("http://[::1]:8080/push/1") == "http://[::1]:8080"
    with pytest.raises(ValueError, match="http"):
        origin_of("ftp://example.com/push")

    subscription = push.subscribe()
    await channel.send_many([message(subscription), message(subscription)])

    first, second = push.deliveries
    assert first.vapid_claims == second.vapid_claims
    assert channel.sign_vapid(push.origin) != channel.sign_vapid("https://other.example")


async def test_the_stand_in_refuses_bad_vapid_tokens(push: PushServiceStandin) -> None:
    """Another service's audience, a 48-hour token or a borrowed key: each is refused 401."""
    key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    subscription = push.subscribe()
    body = encrypt_payload(
        b'{"title": "t"}', subscription.keys["p256dh"], subscription.keys["auth"]
    )
    now = int(time.time())

    def authorization(claims: dict[str, object], signer: ec.EllipticCurvePrivateKey) -> str:
        token = str(Vapid02(private_key=signer).sign(claims)["Authorization"])
        if signer is other_key:  # keep the signature, claim to be ``key``
            return token.split(",k=")[0] + ",k=" + vapid_public_key_b64(key)
        return token

    attempts = [
        authorization({"aud": "https://other.example", "exp": now + 3600, "sub": SUBJECT}, key),
        authorization({"aud": push.origin, "exp": now + 48 * 3600, "sub": SUBJECT}, key),
        authorization({"aud": push.origin, "exp": now + 3600, "sub": SUBJECT}, other_key),
    ]
    async with httpx.AsyncClient(timeout=5) as client:
        statuses = [
            (
                await client.post(
                    subscription.endpoint,
                    content=body,
                    headers={"Authorization": value, "Content-Encoding": "aes128gcm", "TTL": "60"},
                )
            ).status_code
            for value in attempts
        ]

    assert statuses == [401, 401, 401]
    assert [r.reason for r in push.rejections] == [
        "vapid aud is not this push service",
        "vapid exp missing, past or more than 24 h ahead",
        "vapid signature does not verify",
    ]
    assert push.deliveries == []
