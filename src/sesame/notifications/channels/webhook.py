"""Signed webhooks to partner systems, following the Standard Webhooks specification.

Every request carries ``webhook-id`` (the transaction id: the same on every retry, so the
receiver can drop a duplicate), ``webhook-timestamp`` (fresh per attempt; receivers
refuse one older than five minutes) and ``webhook-signature``: one ``v1,`` HMAC-SHA256
signature per secret the endpoint currently has, so during a rotation a receiver holding
either the old or the new secret accepts the request.

Only a 2xx is success. 410 means the partner asked us to stop (the endpoint is
deactivated); every other answer, a timeout or a refused connection is retried on the
delivery worker's schedule, which eventually gives up. Redirects are not followed: a
signed request is meant for the URL the partner registered, and a redirect could point
anywhere, so it fails the delivery. Every connection goes through the egress policy
(``sesame.kit.egress``): an endpoint that is, or has come to resolve to, this host or a
private network fails without a request.
"""

from __future__ import annotations

import base64
import binascii
import secrets as random_secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import orjson
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

from sesame.kit.egress import EgressPolicy, EgressRefused, Unresolvable
from sesame.kit.logging import get_logger
from sesame.notifications.channels.base import (
    InFlight,
    Message,
    Outcome,
    Result,
    retry_after_seconds,
    send_bounded,
)

log = get_logger("sesame.notifications.webhook")

USER_AGENT = "Sesame-Webhooks/1"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(32)).decode("ascii")


def webhook_body(m: Message, now: datetime) -> bytes:
    """The JSON body, compact UTF-8; these exact bytes are what gets signed. Its
    ``timestamp`` is the event's, so a retry carries the same body."""
    moment = (m.occurred_at or now).astimezone(UTC)
    timestamp = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps({"type": m.event_type, "timestamp": timestamp, "data": m.payload})


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<sig> v1,<sig2>``: one signature per valid secret, space-separated."""
    when = datetime.fromtimestamp(timestamp, UTC)
    text = body.decode("utf-8")
    return " ".join(Webhook(secret).sign(msg_id, when, text) for secret in secrets)


class WebhookChannel:
    """POST each message, signed, to its partner's endpoint."""

    name = "webhook"

    def __init__(
        self,
        *,
        concurrency: int = 16,
        timeout_seconds: float = 10.0,
        egress: EgressPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """``egress``: where endpoints may be (default: public addresses only). A
        ``client`` given is used as it is, its connections the caller's business."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._concurrency = concurrency
        self._in_flight = InFlight(concurrency)
        self._timeout = timeout_seconds
        self._owns_client = client is None
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = client or httpx.AsyncClient(
            timeout=timeout_seconds,
            transport=(egress or EgressPolicy()).transport(limits=limits),
            follow_redirects=False,
        )

    async def send_many(self, messages: Sequence[Message]) -> list[Result]:
        return await send_bounded(messages, self._concurrency, self._send_one, self._in_flight)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _send_one(self, m: Message) -> Result:
        if urlsplit(m.address).scheme not in {"http", "https"}:
            return Result(Outcome.REJECTED, code="invalid_url", detail="not an http(s) URL")
        if not m.secrets:
            return Result(Outcome.REJECTED, code="no_secret", detail="never sent unsigned")
        now = time.time()
        body = webhook_body(m, datetime.fromtimestamp(now, UTC))
        timestamp = int(now)
        try:
            signatures = signature_header(m.secrets, m.transaction_id, timestamp, body)
        except (ValueError, binascii.Error, EmptyWebhookSecretError):
            return Result(Outcome.REJECTED, code="invalid_secret", detail="secret is not base64")
        headers = {
            "webhook-id": m.transaction_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        try:
            # Streamed and never read: a partner's answer body is not our business.
            async with self._client.stream(
                "POST", m.address, content=body, headers=headers, timeout=self._timeout
            ) as response:
                result = classify(response)
        except httpx.InvalidURL:
            return Result(Outcome.REJECTED, code="invalid_url", detail="malformed URL")
        except Unresolvable:
            return Result(Outcome.RETRY, code="unresolvable")
        except EgressRefused as exc:
            log.warning("webhook_refused", delivery_id=str(m.delivery_id), reason=exc.reason)
            return Result(Outcome.REJECTED, code=exc.reason, detail=str(exc))
        except httpx.TimeoutException:
            return Result(Outcome.RETRY, code="timeout")
        except httpx.HTTPError as exc:
            return Result(Outcome.RETRY, code="connection_error", detail=type(exc).__name__)
        if result.outcome is not Outcome.SENT:
            log.info(
                "webhook_not_sent",
                delivery_id=str(m.delivery_id),
                host=urlsplit(m.address).hostname,
                status=response.status_code,
                outcome=result.outcome.value,
            )
        return result


def classify(response: httpx.Response) -> Result:
    """2xx is delivered, 410 is "stop", a redirect fails (it is not followed), anything
    else is retried (with its code kept)."""
    status = response.status_code
    code = f"http_{status}"
    if 200 <= status < 300:
        return Result(Outcome.SENT, code=None)
    if 300 <= status < 400:
        return Result(Outcome.REJECTED, code=code, detail="redirects are not followed")
    if status == 410:
        return Result(Outcome.GONE, code=code, detail="the partner asked to stop")
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    return Result(Outcome.RETRY, code=code, retry_after=retry_after)
