"""A local push service that checks what a real one would, and decrypts what a browser would.

``PushServiceStandin`` answers ``POST /push/{id}`` like a push service (RFC 8030): it
verifies the VAPID token itself (ES256 with the ``k`` key, ``aud`` equal to its own
origin, ``exp`` in the future and at most 24 h ahead — RFC 8292), checks the headers,
then decrypts the body with the subscriber's private key and auth secret exactly as the
browser would (RFC 8291). A message it stores was therefore encrypted correctly; one it
could not decrypt is answered 400 and recorded in ``rejections``.

``subscribe()`` makes a subscription the way a browser does (a P-256 key pair and a
16-byte auth secret); its ``keys`` go into a ``Message`` as they would from the browser.

Usage::

    async with PushServiceStandin() as push:
        subscription = push.subscribe()
        ...  # send to subscription.endpoint with subscription.keys
        assert push.deliveries[0].payload["title"] == "..."
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import http_ece  # type: ignore[import-untyped]
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sesame.notifications.testing.serving import BackgroundServer, Served

MAX_VAPID_LIFETIME_SECONDS = 24 * 3600
_URGENCIES = {"very-low", "low", "normal", "high"}
_TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class BrowserSubscription:
    """What a browser keeps after ``pushManager.subscribe()``: the private half stays here."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    application_server_key: str | None = None
    expired: bool = False

    @property
    def keys(self) -> dict[str, str]:
        public = self.private_key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        return {"p256dh": _b64url_encode(public), "auth": _b64url_encode(self.auth_secret)}

    def as_json(self) -> dict[str, Any]:
        """``PushSubscription.toJSON()`` as a browser would hand it to the server."""
        return {"endpoint": self.endpoint, "keys": self.keys}


def new_browser_subscription(
    endpoint: str, application_server_key: str | None = None
) -> BrowserSubscription:
    return BrowserSubscription(
        id=endpoint.rstrip("/").rsplit("/", 1)[-1],
        endpoint=endpoint,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        auth_secret=os.urandom(16),
        application_server_key=application_server_key,
    )


@dataclass(frozen=True)
class PushDelivery:
    subscription_id: str
    payload: dict[str, Any]
    ttl: int
    urgency: str
    topic: str | None
    vapid_claims: dict[str, Any]
    vapid_key: str


@dataclass(frozen=True)
class PushRejection:
    subscription_id: str
    status: int
    reason: str


@dataclass
class _ForcedAnswer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def verify_vapid(authorization: str, audience: str, now: float) -> tuple[dict[str, Any], str]:
    """Check a ``vapid t=..., k=...`` header the way a push service must (RFC 8292 §3-4).

    Written against the RFCs with ``cryptography`` alone, not with the library the
    channel signs with, so a shared misreading cannot pass unnoticed.
    """
    scheme, _, params = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise _Refused(401, "not a vapid authorization")
    fields: dict[str, str] = {}
    for part in params.split(","):
        name, _, value = part.strip().partition("=")
        fields[name.strip().lower()] = value.strip()
    token, key = fields.get("t", ""), fields.get("k", "")
    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(_b64url_decode(header_b64))
        claims = json.loads(_b64url_decode(claims_b64))
        signature = _b64url_decode(signature_b64)
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), _b64url_decode(key)
        )
    except ValueError as exc:
        raise _Refused(401, "malformed vapid token") from exc
    if header.get("alg") != "ES256" or len(signature) != 64:
        raise _Refused(401, "vapid token is not ES256")
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        public_key.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise _Refused(401, "vapid signature does not verify") from exc
    if claims.get("aud") != audience:
        raise _Refused(401, "vapid aud is not this push service")
    expires = claims.get("exp")
    if not isinstance(expires, int) or not now < expires <= now + MAX_VAPID_LIFETIME_SECONDS:
        raise _Refused(401, "vapid exp missing, past or more than 24 h ahead")
    subject = claims.get("sub", "")
    if not (isinstance(subject, str) and subject.startswith(("mailto:", "https://"))):
        raise _Refused(401, "vapid sub is not a mailto: or https: URL")
    return claims, key


class PushServiceStandin(Served):
    """A push service on localhost for tests; see the module docstring."""

    def __init__(self, *, delay_seconds: float = 0.0) -> None:
        self._generation = 0
        self.reset(delay_seconds=delay_seconds)
        self.app = Starlette(routes=[Route("/push/{id}", self._receive, methods=["POST"])])
        self._server = BackgroundServer(self.app)

    def reset(self, *, delay_seconds: float = 0.0) -> None:
        """Forget subscriptions, deliveries and forced answers; keep serving.

        A request still in progress from before the reset is answered 503 and not recorded.
        """
        self._generation += 1
        self.delay_seconds = delay_seconds
        self.subscriptions: dict[str, BrowserSubscription] = {}
        self.deliveries: list[PushDelivery] = []
        self.rejections: list[PushRejection] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._forced: list[_ForcedAnswer] = []

    @property
    def origin(self) -> str:
        return self._server.base_url

    async def start(self) -> str:
        return await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()

    def subscribe(self, application_server_key: str | None = None) -> BrowserSubscription:
        """A new subscription; with ``application_server_key``, other VAPID keys get 403."""
        if not self.origin:
            raise RuntimeError("start the stand-in before subscribing")
        endpoint = f"{self.origin}/push/{uuid.uuid4().hex}"
        subscription = new_browser_subscription(endpoint, application_server_key)
        self.subscriptions[subscription.id] = subscription
        return subscription

    def expire(self, subscription: BrowserSubscription) -> None:
        """The browser unsubscribed: the service answers 410 from now on."""
        subscription.expired = True

    def answer_next(self, status: int, headers: dict[str, str] | None = None) -> None:
        """Answer the next request with ``status`` before any check (e.g. 429, 503)."""
        self._forced.append(_ForcedAnswer(status, dict(headers or {})))

    def delivered_to(self, subscription: BrowserSubscription) -> list[dict[str, Any]]:
        return [d.payload for d in self.deliveries if d.subscription_id == subscription.id]

    async def _receive(self, request: Request) -> Response:
        generation = self._generation
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            if generation != self._generation:
                return Response(status_code=503)  # belongs to a test that has moved on
            if self._forced:
                forced = self._forced.pop(0)
                return Response(status_code=forced.status, headers=forced.headers)
            subscription_id = request.path_params["id"]
            try:
                return await self._accept(request, subscription_id)
            except _Refused as refused:
                self.rejections.append(
                    PushRejection(subscription_id, refused.status, refused.reason)
                )
                return Response(refused.reason, status_code=refused.status)
        finally:
            if generation == self._generation:
                self.in_flight -= 1

    async def _accept(self, request: Request, subscription_id: str) -> Response:
        subscription = self.subscriptions.get(subscription_id)
        if subscription is None:
            raise _Refused(404, "no such subscription")
        if subscription.expired:
            raise _Refused(410, "subscription expired")
        claims, key = verify_vapid(
            request.headers.get("authorization", ""), self.origin, time.time()
        )
        if subscription.application_server_key not in {None, key}:
            raise _Refused(403, "vapid key is not the one the browser subscribed with")
        headers = request.headers
        if headers.get("content-encoding") != "aes128gcm":
            raise _Refused(400, "content-encoding must be aes128gcm")
        ttl = headers.get("ttl", "")
        if not ttl.isdigit():
            raise _Refused(400, "TTL missing or not a non-negative integer")
        urgency = headers.get("urgency", "normal")
        if urgency not in _URGENCIES:
            raise _Refused(400, "unknown urgency")
        topic = headers.get("topic")
        if topic is not None and not _TOPIC_RE.match(topic):
            raise _Refused(400, "topic must be at most 32 base64url characters")
        body = await request.body()
        if len(body) > 4096:
            raise _Refused(413, "payload too large")
        try:
            plaintext = http_ece.decrypt(
                body,
                private_key=subscription.private_key,
                auth_secret=subscription.auth_secret,
                version="aes128gcm",
            )
            payload = json.loads(plaintext)
        except Exception as exc:  # whatever fails here, the browser could not read it
            raise _Refused(400, "payload does not decrypt to JSON") from exc
        self.deliveries.append(
            PushDelivery(subscription.id, payload, int(ttl), urgency, topic, claims, key)
        )
        location = f"{self.origin}/messages/{uuid.uuid4().hex}"
        return Response(status_code=201, headers={"Location": location})
