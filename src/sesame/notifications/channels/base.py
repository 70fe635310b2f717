"""What every channel takes and answers: the seam between deliveries and providers.

A channel sends a batch of messages and answers one ``Result`` per message, in order. It
never raises for a provider's refusal (that is a result); it may raise only for its own
misconfiguration. It bounds its own concurrency (no task or thread per message beyond
its limit) and puts a timeout on every call.

``Outcome`` is the classification the delivery worker acts on:

- ``SENT`` — the provider accepted it.
- ``RETRY`` — try again later (a 5xx, a timeout, a 429 or quota: ``retry_after`` when
  the provider said how long).
- ``GONE`` — the destination no longer exists (FCM ``UNREGISTERED``, Web Push 404/410):
  the delivery fails and the destination is deactivated.
- ``REJECTED`` — the provider refused this message for good (bad request, too large,
  auth failure that a retry will not fix): the delivery fails, the destination stays.

``Message.transaction_id`` is stable across resends of the same delivery, and each
channel hands it downstream (FCM data and collapse key, Web Push ``Topic``, e-mail
``Message-ID``, webhook ``webhook-id``) so that a resend after a crash is recognised
as the same message.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from uuid import UUID


class Outcome(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"
    GONE = "gone"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Message:
    delivery_id: UUID
    transaction_id: str
    address: str  # FCM registration token, push endpoint URL, e-mail address, webhook URL
    title: str
    body: str
    category: str
    locale: str
    event_type: str
    data: dict[str, str] = field(default_factory=dict)  # string values only (FCM's rule)
    # Web Push: p256dh, auth. Webhooks: the endpoint's valid signing secrets. Never shown.
    keys: dict[str, str] = field(default_factory=dict, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    payload: dict[str, Any] = field(default_factory=dict)  # webhooks: the event's data
    occurred_at: datetime | None = None  # when the event happened: the same on every retry


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    code: str | None = None  # the provider's error code: "UNREGISTERED", "http_410", ...
    detail: str | None = None  # a short reason, never a token or the message body
    retry_after: float | None = None  # seconds, when the provider said
    provider_id: str | None = None  # the provider's id for the accepted message


class Channel(Protocol):
    name: str

    async def send_many(self, messages: Sequence[Message]) -> list[Result]: ...

    async def aclose(self) -> None: ...


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class InFlight:
    """A channel's bound on calls in flight across every batch it is sending at once: the
    sender keeps several batches going, and a request must not start its timeout waiting
    in the HTTP client's pool behind the other batches' requests."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None

    def slots(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:  # a semaphore serves one loop
            self._slots, self._loop = asyncio.Semaphore(self.limit), loop
        return self._slots


async def send_bounded(
    messages: Sequence[Message],
    concurrency: int,
    send_one: Callable[[Message], Awaitable[Result]],
    in_flight: InFlight | None = None,
) -> list[Result]:
    """Run ``send_one`` over the batch with at most ``concurrency`` in flight, in order —
    and, given ``in_flight``, at most its limit across every batch sharing it.

    A fixed number of workers pull the next index, so a batch of ten thousand makes
    ``concurrency`` tasks, not ten thousand.
    """
    results: list[Result | None] = [None] * len(messages)
    indices = iter(range(len(messages)))
    slots = in_flight.slots() if in_flight is not None else None

    async def worker() -> None:
        for index in indices:
            if slots is None:
                results[index] = await send_one(messages[index])
                continue
            async with slots:
                results[index] = await send_one(messages[index])

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(messages))):
            group.create_task(worker())
    done = [result for result in results if result is not None]
    assert len(done) == len(messages)  # every worker ran to the end or the group raised
    return done
