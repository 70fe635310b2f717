"""Sending one-time codes by SMS, behind one small interface.

``console`` prints the message (development only; settings refuse it elsewhere);
``http`` posts JSON to an SMS gateway with a timeout; ``MemorySmsSender`` records
messages for tests and simulators.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from sesame.kit.errors import ServiceUnavailable
from sesame.kit.logging import get_logger
from sesame.settings import Settings

log = get_logger("sesame.sms")


class SmsSender(Protocol):
    async def send(self, phone: str, text: str) -> None: ...


class ConsoleSmsSender:
    async def send(self, phone: str, text: str) -> None:
        # Printed, not logged: log pipelines must never carry codes.
        print(f"[sms to {phone}] {text}", file=sys.stderr, flush=True)


@dataclass
class SentSms:
    phone: str
    text: str


@dataclass
class MemorySmsSender:
    sent: list[SentSms] = field(default_factory=list)
    fail: bool = False

    async def send(self, phone: str, text: str) -> None:
        if self.fail:
            raise ServiceUnavailable("SMS gateway unavailable")
        self.sent.append(SentSms(phone, text))

    def last_to(self, phone: str) -> SentSms | None:
        return next((m for m in reversed(self.sent) if m.phone == phone), None)


class HttpSmsSender:
    """POST ``{"to", "text"}`` to a gateway; one attempt, bounded by a timeout."""

    def __init__(self, url: str, token: str | None, timeout_seconds: float) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(timeout=timeout_seconds, headers=headers)
        self._url = url

    async def send(self, phone: str, text: str) -> None:
        try:
            response = await self._client.post(self._url, json={"to": phone, "text": text})
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("sms_send_failed", error_type=type(exc).__name__)
            raise ServiceUnavailable("SMS gateway unavailable; try again shortly") from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def sender_from_settings(settings: Settings) -> SmsSender:
    if settings.sms_backend == "http":
        assert settings.sms_http_url is not None  # settings validation guarantees it
        token = settings.sms_http_token.get_secret_value() if settings.sms_http_token else None
        return HttpSmsSender(settings.sms_http_url, token, settings.sms_timeout_seconds)
    return ConsoleSmsSender()
