"""A partner's webhook receiver for tests, verifying signatures with its own implementation.

``WebhookReceiver`` checks each request as the Standard Webhooks specification tells a
receiver to — HMAC-SHA256 over ``{id}.{timestamp}.{body}`` keyed with the base64-decoded
secret after ``whsec_``, a constant-time comparison against every ``v1,`` signature, and
a timestamp within five minutes — written here with ``hmac`` alone, not with the library
the channel signs with, so a shared misreading cannot pass unnoticed. A bad signature is
answered 401 and recorded in ``rejections``.

It keeps each ``webhook-id`` once (``events``) and counts repeats in ``duplicates``, and
can be told to fail: ``fail_next(n, 503)`` for the next requests, ``fail_path(path, 410)``
for every request to one path.

Usage::

    async with WebhookReceiver([secret]) as receiver:
        url = receiver.url("/hooks")
        ...  # send to url signed with secret
        assert receiver.events[0].body["type"] == "..."
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sesame.notifications.testing.serving import BackgroundServer, Served

TOLERANCE_SECONDS = 5 * 60


def expected_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> bytes:
    key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def signature_matches(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether any ``v1,`` signature in the headers was made with ``secret``."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    expected = expected_signature(secret, msg_id, timestamp, body)
    for candidate in headers.get("webhook-signature", "").split(" "):
        version, _, encoded = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, given):
            return True
    return False


@dataclass(frozen=True)
class ReceivedWebhook:
    path: str
    msg_id: str
    timestamp: int
    headers: dict[str, str]
    raw_body: bytes
    body: dict[str, Any]

    @property
    def signatures(self) -> list[str]:
        return self.headers.get("webhook-signature", "").split(" ")


@dataclass(frozen=True)
class RejectedWebhook:
    path: str
    status: int
    reason: str


@dataclass
class _Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class WebhookReceiver(Served):
    """An HTTP endpoint a partner would run; see the module docstring."""

    def __init__(self, secrets: Sequence[str], *, delay_seconds: float = 0.0) -> None:
        self._generation = 0
        self.reset(secrets, delay_seconds=delay_seconds)
        self.app = Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST"])])
        self._server = BackgroundServer(self.app)

    def reset(self, secrets: Sequence[str], *, delay_seconds: float = 0.0) -> None:
        """Forget everything received and every failure asked for; keep serving.

        A request still in progress from before the reset is answered 503 and not recorded.
        """
        self._generation += 1
        self.secrets = list(secrets)
        self.delay_seconds = delay_seconds
        self.events: list[ReceivedWebhook] = []
        self.duplicates = 0
        self.attempts = 0
        self.rejections: list[RejectedWebhook] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._fail_next: list[_Failure] = []
        self._fail_paths: dict[str, _Failure] = {}
        self._seen: set[str] = set()

    def url(self, path: str = "/hooks") -> str:
        return self._server.base_url + path

    async def start(self) -> str:
        return await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()

    def fail_next(
        self, count: int, status: int = 503, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next ``count`` requests with ``status`` before checking anything."""
        self._fail_next.extend(_Failure(status, dict(headers or {})) for _ in range(count))

    def fail_path(self, path: str, status: int, headers: dict[str, str] | None = None) -> None:
        """Answer every request to ``path`` with ``status``."""
        self._fail_paths[path] = _Failure(status, dict(headers or {}))

    async def _receive(self, request: Request) -> Response:
        generation = self._generation
        self.attempts += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            if generation != self._generation:
                return Response(status_code=503)  # belongs to a test that has moved on
            path = request.url.path
            failure = self._fail_next.pop(0) if self._fail_next else self._fail_paths.get(path)
            if failure is not None:
                return Response(status_code=failure.status, headers=failure.headers)
            body = await request.body()
            refusal = self._refusal(request.headers, body)
            if refusal is not None:
                status, reason = refusal
                self.rejections.append(RejectedWebhook(path, status, reason))
                return Response(reason, status_code=status)
            msg_id = request.headers["webhook-id"]
            if msg_id in self._seen:
                self.duplicates += 1
                return Response(status_code=200)  # already handled: acknowledge, do nothing
            self._seen.add(msg_id)
            self.events.append(
                ReceivedWebhook(
                    path=path,
                    msg_id=msg_id,
                    timestamp=int(request.headers["webhook-timestamp"]),
                    headers=dict(request.headers),
                    raw_body=body,
                    body=json.loads(body),
                )
            )
            return Response(status_code=204)
        finally:
            if generation == self._generation:
                self.in_flight -= 1

    def _refusal(self, headers: Mapping[str, str], body: bytes) -> tuple[int, str] | None:
        if not all(headers.get(name) for name in ("webhook-id", "webhook-timestamp")):
            return 401, "missing webhook headers"
        timestamp = headers["webhook-timestamp"]
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
            return 401, "timestamp outside the tolerance"
        if not any(signature_matches(secret, headers, body) for secret in self.secrets):
            return 401, "no signature matches"
        if headers.get("content-type", "").split(";")[0] != "application/json":
            return 415, "content-type is not application/json"
        try:
            json.loads(body)
        except ValueError:
            return 400, "body is not JSON"
        return None
