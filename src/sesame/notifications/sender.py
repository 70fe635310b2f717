"""The sender: queued deliveries go out through their channels, and what happened is kept.

- **Claiming.** A sender takes a batch of due deliveries under a lease: their
  ``next_attempt_at`` moves to the lease's end (``SESAME_NOTIFY_LEASE_SECONDS``), so
  other senders — in this process or any other — pass them by, and a sender that dies
  leaves them due again when the lease runs out (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL; SQLite's writers take turns).
- **Sending.** Each channel sends its share of the batch with bounded concurrency; every
  delivery carries its transaction id downstream, so a resend after a crash is known
  there as the same message.
- **Recording.** One transaction writes every outcome — only for deliveries whose lease
  the sender still holds — and deactivates the destinations a provider called gone.
- **Pipelining.** A sending loop keeps up to ``SESAME_NOTIFY_BATCHES_IN_FLIGHT`` batches
  going: the next is claimed while the others are sent and recorded, so the channels do
  not wait on the database between batches; each channel bounds its requests across all
  of them.
- **Retries.** Webhooks follow the Standard Webhooks schedule (5 s, 5 min, 30 min, 2 h,
  5 h, 10 h, then dead); push and e-mail back off exponentially with jitter up to
  ``SESAME_NOTIFY_MAX_ATTEMPTS`` attempts. A provider's ``Retry-After`` is honoured.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import prometheus_client

from sesame.kit.db import write_intent
from sesame.kit.keyring import PurposeKeys
from sesame.kit.logging import get_logger
from sesame.kit.loop import keep_running
from sesame.kit.retry import backoff_delay
from sesame.models import DeliveryStatus
from sesame.notifications import confirmation
from sesame.notifications.channels.base import Channel, Message, Outcome, Result
from sesame.notifications.repository import NotificationRepository
from sesame.runtime import Runtime

log = get_logger("sesame.notifications")

WEBHOOK_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)
OUTCOMES = prometheus_client.Counter(
    "sesame_notification_deliveries_total",
    "Delivery attempts by channel and outcome",
    ["channel", "outcome"],
)


def webhook_keys(runtime: Runtime) -> PurposeKeys:
    """The keys webhook secrets are sealed with at rest."""
    return runtime.keys.webhook_secrets


def retry_delay(
    channel: str, attempts: int, max_attempts: int, retry_after: float | None
) -> float | None:
    """Seconds until the next attempt after ``attempts`` tries; None: the budget is spent."""
    if channel == "webhook":
        if attempts > len(WEBHOOK_SCHEDULE):
            return None
        delay = WEBHOOK_SCHEDULE[attempts - 1] * random.uniform(0.9, 1.1)  # noqa: S311
    else:
        if attempts >= max_attempts:
            return None
        delay = 1.0 + backoff_delay(attempts, base=5.0, cap=3600.0)
    return max(delay, retry_after or 0.0)


@dataclass(frozen=True)
class _Batch:
    """Deliveries claimed together: one lease, one transaction for their outcomes."""

    rows: list[Any]
    claimed_at: datetime
    lease: datetime


class Sender:
    def __init__(self, runtime: Runtime, channels: Mapping[str, Channel]) -> None:
        self.runtime = runtime
        self.channels = channels
        self.sent = 0
        self._keys = webhook_keys(runtime)
        self._confirmation_key = confirmation.confirmation_key(runtime)

    async def send_batch(self, limit: int | None = None) -> int:
        """Claim, send and record one batch. Returns how many deliveries it took."""
        batch = await self._claim(limit)
        if batch is None:
            return 0
        await self._finish(batch)
        return len(batch.rows)

    async def drain(self) -> int:
        """Send until nothing is due, with up to ``SESAME_NOTIFY_BATCHES_IN_FLIGHT`` batches
        at a time: the next is claimed while the others are sent and recorded, so the
        channels never wait on the database. Returns how many deliveries it took.

        What a crash can send twice is what was in flight: at most that many batches. The
        first batch to fail stops the claiming; the others finish, then its error is raised.
        """
        slots = asyncio.Semaphore(self.runtime.settings.notify_batches_in_flight)
        running: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []
        taken = 0

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()
            if not task.cancelled() and (failure := task.exception()) is not None:
                failures.append(failure)

        try:
            while not failures:
                await slots.acquire()
                if failures:  # one failed while this loop waited for a slot
                    slots.release()
                    break
                try:
                    batch = await self._claim()
                except BaseException:
                    slots.release()
                    raise
                if batch is None:
                    slots.release()
                    break
                taken += len(batch.rows)
                task = asyncio.create_task(self._finish(batch))
                running.add(task)
                task.add_done_callback(finished)
            if running:
                await asyncio.wait(set(running))
        except BaseException:
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(set(running))
            raise
        if failures:
            raise failures[0]
        return taken

    async def _claim(self, limit: int | None = None) -> _Batch | None:
        settings = self.runtime.settings
        now = self.runtime.clock.now()
        lease = now + timedelta(seconds=settings.notify_lease_seconds)
        with write_intent():
            async with self.runtime.session_factory() as session:
                rows = await NotificationRepository(session).claim(
                    now, lease, limit or settings.notify_batch_size
                )
                await session.commit()
        return _Batch(rows, now, lease) if rows else None

    async def _finish(self, batch: _Batch) -> None:
        """Send a claimed batch and record every outcome in one transaction."""
        now, lease = batch.claimed_at, batch.lease
        by_channel: dict[str, list[tuple[Any, Message]]] = defaultdict(list)
        outcomes: list[dict[str, Any]] = []
        gone: list[UUID] = []
        for row in batch.rows:
            message = self._message(row, now)
            if message is None:
                inactive = Result(Outcome.REJECTED, "destination_inactive")
                outcomes.append(self._outcome(row, lease, inactive, now))
            else:
                by_channel[row.channel].append((row, message))
        sends = [self._send(channel, pairs) for channel, pairs in by_channel.items()]
        done = await asyncio.gather(*sends)
        finished = self.runtime.clock.now()
        counted: Counter[tuple[str, str]] = Counter()
        for pairs, results in done:
            for (row, _), result in zip(pairs, results, strict=True):
                outcomes.append(self._outcome(row, lease, result, finished))
                counted[row.channel, result.outcome.value] += 1
                if result.outcome is Outcome.GONE and row.destination_id is not None:
                    gone.append(row.destination_id)
        for (channel, label), count in counted.items():
            OUTCOMES.labels(channel, label).inc(count)
        for outcome in outcomes:
            outcome["updated_at"] = finished
        with write_intent():
            async with self.runtime.session_factory() as session:
                repository = NotificationRepository(session)
                await repository.record(outcomes)
                await repository.deactivate(gone, "provider_gone", finished)
                await session.commit()
        self.sent += len(batch.rows)

    async def _send(
        self, channel: str, pairs: list[tuple[Any, Message]]
    ) -> tuple[list[tuple[Any, Message]], list[Result]]:
        sender = self.channels.get(channel)
        if sender is None:
            return pairs, [Result(Outcome.REJECTED, "channel_not_configured")] * len(pairs)
        try:
            return pairs, await sender.send_many([message for _, message in pairs])
        except Exception as exc:  # a channel's own fault: retried like an outage
            log.warning(
                "notification_channel_failed", channel=channel, error_type=type(exc).__name__
            )
            return pairs, [Result(Outcome.RETRY, "channel_error", type(exc).__name__)] * len(pairs)

    def _message(self, row: Any, now: datetime) -> Message | None:
        secrets: tuple[str, ...] = ()
        keys: dict[str, str] = {}
        if row.channel == "webhook":
            if not row.endpoint_active or row.url is None:
                return None
            address = row.url
            associated = row.webhook_endpoint_id.bytes
            secrets = (self._keys.unseal(row.sealed_secret, associated).decode(),)
            if (
                row.sealed_previous_secret
                and row.previous_expires_at
                and row.previous_expires_at > now
            ):
                secrets += (self._keys.unseal(row.sealed_previous_secret, associated).decode(),)
        elif row.destination_id is not None:
            if not row.destination_active and not confirmation.awaits_confirmation(row):
                return None
            address, keys = row.address, dict(row.keys or {})
        elif row.channel == "sms":
            if not row.person_phone:
                return None
            address = row.person_phone
        elif row.staff_email:
            address = row.staff_email
        else:
            return None
        body, data = confirmation.reveal(self._confirmation_key, row)
        return Message(
            delivery_id=row.id,
            transaction_id=row.transaction_id,
            address=address,
            title=row.title,
            body=body,
            category=row.category,
            locale=row.locale,
            event_type=row.event_type,
            data={
                k: str(v)
                for k, v in data.items()
                if v is not None and not isinstance(v, dict | list)
            },
            keys=keys,
            secrets=secrets,
            payload=data,
            occurred_at=row.created_at,
        )

    def _outcome(self, row: Any, lease: datetime, result: Result, now: datetime) -> dict[str, Any]:
        values: dict[str, Any] = {
            "b_id": row.id,
            "b_lease": lease,
            "error_code": result.code,
            "error": (result.detail or None) and result.detail[:300],
            "provider_id": result.provider_id,
            "sent_at": None,
            "finished_at": None,
            "next_attempt_at": now,
        }
        if result.outcome is Outcome.SENT:
            values.update(status=DeliveryStatus.SENT, sent_at=now, finished_at=now, error_code=None)
        elif result.outcome in (Outcome.GONE, Outcome.REJECTED):
            values.update(status=DeliveryStatus.FAILED, finished_at=now)
        else:
            delay = retry_delay(
                row.channel,
                row.attempts,
                self.runtime.settings.notify_max_attempts,
                result.retry_after,
            )
            if delay is None:
                values.update(status=DeliveryStatus.DEAD, finished_at=now)
            else:
                values.update(
                    status=DeliveryStatus.QUEUED, next_attempt_at=now + timedelta(seconds=delay)
                )
        return values


async def run_sender(sender: Sender, wake: asyncio.Event) -> None:
    """Send for as long as the process lives: batch after batch while there is work, then
    wait for new deliveries in this process (``wake``) or a second for the others'."""

    async def drain() -> None:
        await sender.drain()

    await keep_running(drain, wake, name="notifications.sender")
