"""Action attempts: every command is persisted, sent at most one at a time per device,
never run late, retried only for transport loss, and can be awaited.

Life of an attempt: ``pending/queued`` → ``pending/sent`` → ``success`` | ``error`` |
``expired`` (phase ``done``).

- **Persisted before sent.** ``submit`` writes the attempt in the request's transaction;
  the command is published only after that commits.
- **One in flight per device, in order.** ``dispatch`` locks the device row, and sends the
  oldest queued attempt only if none is in flight. Any process may call it at any time;
  the lock makes that safe with several workers.
- **Never late.** A queued attempt past ``expires_at`` becomes ``expired`` and is never
  sent; a device rejects a command that reaches it after ``expires_at``.
- **Retries only for transport loss.** With no result ``ack_timeout`` after a send, the
  same command (same id, which devices deduplicate) is published again, after capped
  exponential backoff with full jitter, and only while the per-device and overall retry
  budgets allow. A device that answers, even with a failure, is never retried.
- **Awaitable.** ``wait`` returns when the attempt finishes or the caller's deadline
  passes (measured on a monotonic clock), whichever is first. Results wake waiters in the
  process that hears them at once; a half-second poll covers attempts finished by
  another process.
- **Crash-safe.** A sweeper in every process expires overdue attempts, times out sent
  ones whose result never came, and resumes queues (after a device reconnects, or after
  the process that held them died).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from sesame.devices import health, protocol
from sesame.devices.drivers import driver_for
from sesame.devices.repository import AttemptRepository, DeviceRepository
from sesame.kit.db import commit, urgent, write_intent
from sesame.kit.errors import Conflict
from sesame.kit.ids import new_id
from sesame.kit.logging import get_logger
from sesame.kit.retry import RetryBudget, backoff_delay
from sesame.models import ActionAttempt, AttemptPhase, AttemptStatus, Device, DeviceStatus
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime

log = get_logger("sesame.attempts")

POLL_SECONDS = 0.5

Publish = Callable[[str, bytes, int], Awaitable[None]]


@dataclass
class _Step:
    """The outcome of taking a device's queue forward, acted on after the commit."""

    finished: list[ActionAttempt] = field(default_factory=list)
    send: ActionAttempt | None = None


def _mark_sent(attempt: ActionAttempt, now: datetime) -> None:
    attempt.phase = AttemptPhase.SENT
    attempt.send_count = (attempt.send_count or 0) + 1
    attempt.first_sent_at = attempt.first_sent_at or now
    attempt.last_sent_at = now


@dataclass(frozen=True)
class Timing:
    ack_timeout: float = 1.5  # no result this long after a send: assume it was lost
    retry_base: float = 0.25
    retry_cap: float = 4.0
    result_grace: float = 1.0  # a result may still arrive this long after expires_at


def _busy_with_it(result: protocol.CommandResult) -> bool:
    return (
        result.outcome is protocol.Outcome.REJECTED
        and result.error is not None
        and result.error.code == protocol.ErrorCode.BUSY.value
    )


async def _was_resent(
    session: AsyncSession, result: protocol.CommandResult, device_id: UUID
) -> bool:
    """Whether the command a result answers is pending and was sent more than once: only
    then can ``busy`` be the answer to a repeat of a command the device is executing."""
    attempt = await AttemptRepository(session).by_id(result.command_id)
    return (
        attempt is not None
        and attempt.device_id == device_id
        and attempt.status is AttemptStatus.PENDING
        and attempt.send_count > 1
    )


class AttemptEngine:
    def __init__(
        self,
        runtime: Runtime,
        publish: Publish,
        *,
        is_connected: Callable[[], bool],
        timing: Timing | None = None,
        budget: RetryBudget | None = None,
    ) -> None:
        self.runtime = runtime
        self._publish = publish
        self._is_connected = is_connected
        self.timing = timing or Timing()
        self.budget = budget or RetryBudget()
        self._done: dict[UUID, asyncio.Event] = {}
        self._waiting: dict[UUID, int] = {}
        self._finished: dict[UUID, ActionAttempt] = {}
        self._watchers: dict[UUID, asyncio.Task[None]] = {}
        self._draining = False
        self.retries_sent = 0

    # -- submitting -------------------------------------------------------------------------

    async def submit(
        self,
        session: AsyncSession,
        device: Device,
        action: str,
        params: dict[str, Any],
        *,
        ttl_seconds: int | None,
        requested_by: str | None,
        locked: bool = False,
        unfinished: int | None = None,
    ) -> tuple[ActionAttempt, protocol.Command | None]:
        """Persist an attempt in the caller's transaction.

        Returns the command to publish when the device can take it right away (nothing
        pending, online); the caller publishes it with ``sent`` after committing.
        Otherwise the attempt waits in the queue and the caller calls ``dispatch`` after
        committing. ``locked``: the caller loaded ``device`` with its row lock, and
        ``unfinished`` is how many attempts it had then (one query less when known).
        """
        if device.status is not DeviceStatus.ACTIVE:
            raise Conflict("the device is decommissioned", device_id=str(device.id))
        now = self.runtime.clock.now()
        attempt_id = new_id()
        command = driver_for(device.kind).build_command(
            action, params, command_id=attempt_id, now=now, ttl_seconds=ttl_seconds
        )
        secret = driver_for(device.kind).actions[action].secret_params
        attempt = ActionAttempt(
            id=attempt_id,
            partner_id=device.partner_id,
            site_id=device.site_id,
            device_id=device.id,
            action=action,
            params={k: ("****" if k in secret else v) for k, v in command.params.items()},
            sealed_params=self._seal(attempt_id, command.params) if secret else None,
            created_at=now,
            expires_at=command.expires_at,
            requested_by=requested_by,
            status=AttemptStatus.PENDING,
            phase=AttemptPhase.QUEUED,
            send_count=0,
            was_confirmed_by_device=False,
        )
        if not locked:  # the caller may already hold the device's lock (one query less)
            device = await DeviceRepository(session).locked(device.id) or device
        attempts = AttemptRepository(session)
        send_now = (
            device.online
            and self._is_connected()
            and not (
                unfinished
                if unfinished is not None and locked
                else await attempts.pending_for(device.id, limit=1)
            )
        )
        if send_now:
            _mark_sent(attempt, now)
        await attempts.insert(attempt)
        return attempt, command if send_now else None

    def _seal(self, attempt_id: UUID, params: dict[str, Any]) -> bytes:
        """Secret params (a PIN) are kept sealed; the attempt shows them masked."""
        return self.runtime.keys.idempotency.seal(orjson.dumps(params), attempt_id.bytes)

    def _params(self, attempt: ActionAttempt) -> dict[str, Any]:
        if attempt.sealed_params is None:
            return dict(attempt.params)
        unsealed: dict[str, Any] = orjson.loads(
            self.runtime.keys.idempotency.unseal(attempt.sealed_params, attempt.id.bytes)
        )
        return unsealed

    async def sent(self, attempt: ActionAttempt, command: protocol.Command) -> None:
        """Publish a command whose attempt is committed as sent, and watch for its result."""
        self.budget.record_request(attempt.device_id)
        await self._send(attempt.device_id, command)
        self._watch(attempt.id, attempt.device_id, command)

    async def deliver(
        self, submitted: tuple[ActionAttempt, protocol.Command | None], device_id: UUID
    ) -> None:
        """After the commit of what ``submit`` returned: publish the command if the device
        could take it at once, else let the device's queue move on."""
        attempt, command = submitted
        if command is not None:
            await self.sent(attempt, command)
        else:
            await self.dispatch(device_id)

    async def _send(self, device_id: UUID, command: protocol.Command) -> None:
        try:
            await self._publish(
                protocol.topic(device_id, protocol.Channel.COMMANDS),
                protocol.encode(command),
                protocol.QOS[protocol.Channel.COMMANDS],
            )
        except Exception as exc:  # the watcher retries within the budget
            log.warning(
                "command_publish_failed", device_id=str(device_id), error_type=type(exc).__name__
            )

    async def dispatch(self, device_id: UUID) -> None:
        """Send the device's next queued attempt if it has none in flight; expire stale ones."""
        with write_intent(), urgent():
            async with self.runtime.session_factory() as session:
                device = await DeviceRepository(session).locked(device_id)
                if device is None:
                    return
                step = await self._next(session, device)
                await commit(session)
        await self._after(step)

    async def _next(self, session: AsyncSession, device: Device) -> _Step:
        """In a transaction holding the device's lock: expire what is stale, and take the
        next attempt to send if nothing is in flight and the device can receive it."""
        step = _Step()
        now = self.runtime.clock.now()
        for attempt in await AttemptRepository(session).pending_for(device.id):
            if attempt.phase is AttemptPhase.SENT:
                return step
            if attempt.expires_at <= now or device.status is not DeviceStatus.ACTIVE:
                expired = await self._expire(session, attempt.id, device, now)
                if expired is not None:
                    step.finished.append(expired)
                continue
            if device.online and self._is_connected():
                _mark_sent(attempt, now)
                step.send = attempt
            return step
        return step

    async def _after(self, step: _Step) -> None:
        """What follows a committed step: wake waiters, publish the next command."""
        for attempt in step.finished:
            self._notify(attempt)
        if step.send is not None:
            attempt = step.send
            await self.sent(
                attempt,
                protocol.Command(
                    command_id=attempt.id,
                    action=attempt.action,
                    params=self._params(attempt),
                    issued_at=attempt.created_at,
                    expires_at=attempt.expires_at,
                ),
            )

    # -- results, timeouts, expiry ------------------------------------------------------------

    async def on_result(self, device_id: UUID, result: protocol.CommandResult) -> None:
        """Finish the attempt a result answers and, in the same transaction, take the
        device's next one."""
        step = _Step()
        with write_intent(), urgent():
            async with self.runtime.session_factory() as session:
                found = await DeviceRepository(session).locked_with_queue(device_id)
                if found is None:
                    return
                device, unfinished = found
                if _busy_with_it(result) and await _was_resent(session, result, device_id):
                    # Section 4: a device still carrying out a command may answer a repeat
                    # with busy; its result comes later and is the one that counts.
                    log.info(
                        "busy_with_repeated_command",
                        device_id=str(device_id),
                        command_id=str(result.command_id),
                    )
                    return
                outcome = driver_for(device.kind).interpret(result)
                finished = await AttemptRepository(session).finish(
                    result.command_id,
                    device_id=device_id,
                    status=outcome.status,
                    was_confirmed_by_device=outcome.confirmed,
                    error=outcome.error,
                    result={"outcome": result.outcome.value, **result.data},
                    completed_at=self.runtime.clock.now(),
                )
                if finished is not None:
                    await outbox.append(session, [self._finished_message(finished)])
                    await self.runtime.device_hooks.finished(session, finished)
                    if unfinished > 1:  # more than the one just finished: take the next
                        step = await self._next(session, device)
                    step.finished.insert(0, finished)
                elif not await AttemptRepository(session).issued_to(result.command_id, device_id):
                    await self._unexpected(session, device, result.command_id)
                await commit(session)
        if finished is None:
            log.info(
                "late_result",
                device_id=str(device_id),
                command_id=str(result.command_id),
            )
            # Another process may have finished it; wake local waiters to re-read.
            self._wake(result.command_id)
            return
        await self._after(step)

    async def _unexpected(self, session: AsyncSession, device: Device, command_id: UUID) -> None:
        """A result for a command the platform never sent this device is a security
        event: someone else commanded it, or speaks for it. A health error on the device
        and an alert to its site's managers (``device.unexpected_result``)."""
        now = self.runtime.clock.now()
        if not health.unexpected_result(device, str(command_id), now):
            return
        log.warning(
            "unexpected_command_result", device_id=str(device.id), command_id=str(command_id)
        )
        await outbox.append(
            session,
            [
                outbox.message(
                    "device.unexpected_result",
                    partner_id=device.partner_id,
                    aggregate_id=device.id,
                    site_id=device.site_id,
                    command_id=command_id,
                    at=now,
                )
            ],
        )

    async def _expire(
        self, session: AsyncSession, attempt_id: UUID, device: Device, now: datetime
    ) -> ActionAttempt | None:
        reason = (
            "the device was offline until the command expired"
            if not device.online
            else "the command expired before it could be sent"
        )
        if device.status is not DeviceStatus.ACTIVE:
            reason = "the device was decommissioned"
        finished = await AttemptRepository(session).finish(
            attempt_id,
            only_phase=AttemptPhase.QUEUED,
            status=AttemptStatus.EXPIRED,
            completed_at=now,
            error={"type": "command_expired", "message": reason},
        )
        if finished is not None:
            await outbox.append(session, [self._finished_message(finished)])
            await self.runtime.device_hooks.finished(session, finished)
        return finished

    async def _time_out(self, attempt_id: UUID, device_id: UUID) -> None:
        step = _Step()
        with write_intent(), urgent():
            async with self.runtime.session_factory() as session:
                device = await DeviceRepository(session).locked(device_id)
                if device is None:
                    return
                finished = await AttemptRepository(session).finish(
                    attempt_id,
                    only_phase=AttemptPhase.SENT,
                    status=AttemptStatus.ERROR,
                    completed_at=self.runtime.clock.now(),
                    error={
                        "type": "device_timeout",
                        "message": "the device did not answer before the command expired",
                    },
                )
                if finished is not None:
                    await outbox.append(session, [self._finished_message(finished)])
                    await self.runtime.device_hooks.finished(session, finished)
                    step.finished.append(finished)
                following = await self._next(session, device)
                step.finished += following.finished
                step.send = following.send
                await commit(session)
        await self._after(step)

    def _watch(self, attempt_id: UUID, device_id: UUID, command: protocol.Command) -> None:
        task = asyncio.create_task(self._watch_loop(attempt_id, device_id, command))
        self._watchers[attempt_id] = task
        task.add_done_callback(lambda _: self._watchers.pop(attempt_id, None))

    async def _watch_loop(
        self, attempt_id: UUID, device_id: UUID, command: protocol.Command
    ) -> None:
        """Retry a sent command whose result does not come; time it out at the deadline."""
        done = self._done_event(attempt_id)
        self._waiting[attempt_id] = self._waiting.get(attempt_id, 0) + 1
        try:
            retries = 0
            wait = self.timing.ack_timeout
            deadline = command.expires_at + timedelta(seconds=self.timing.result_grace)
            while True:
                remaining = (deadline - self.runtime.clock.now()).total_seconds()
                try:
                    await asyncio.wait_for(done.wait(), timeout=max(0.0, min(wait, remaining)))
                    return
                except TimeoutError:
                    pass
                now = self.runtime.clock.now()
                if now >= deadline:
                    await self._time_out(attempt_id, device_id)
                    return
                if (
                    now < command.expires_at
                    and self._is_connected()
                    and self.budget.try_retry(device_id)
                ):
                    retries += 1
                    self.retries_sent += 1
                    await self._record_resend(attempt_id, now)
                    await self._send(device_id, command)
                    log.info(
                        "command_resent",
                        device_id=str(device_id),
                        command_id=str(attempt_id),
                        retry=retries,
                    )
                    wait = self.timing.ack_timeout + backoff_delay(
                        retries, base=self.timing.retry_base, cap=self.timing.retry_cap
                    )
                else:
                    wait = remaining
        except Exception as exc:  # the sweeper finishes what a broken watcher leaves
            log.warning("attempt_watch_failed", error_type=type(exc).__name__)
        finally:
            self._release(attempt_id)

    async def _record_resend(self, attempt_id: UUID, now: datetime) -> None:
        with write_intent(), urgent():
            async with self.runtime.session_factory() as session:
                attempt = await AttemptRepository(session).by_id(attempt_id)
                if attempt is not None and attempt.status is AttemptStatus.PENDING:
                    attempt.send_count += 1
                    attempt.last_sent_at = now
                    await commit(session)

    async def sweep(self) -> int:
        """Finish what is overdue and resume stalled queues; returns attempts finished."""
        now = self.runtime.clock.now()
        finished = 0
        async with self.runtime.read_session_factory() as session:
            attempts = AttemptRepository(session)
            queued = await attempts.overdue(AttemptPhase.QUEUED, now)
            sent = await attempts.overdue(
                AttemptPhase.SENT, now - timedelta(seconds=self.timing.result_grace)
            )
            stalled = await attempts.devices_with_queue()
        for attempt_id, device_id in sent:
            if attempt_id not in self._watchers:
                await self._time_out(attempt_id, device_id)
                finished += 1
        for device_id in {device for _, device in queued} | set(stalled):
            await self.dispatch(device_id)
        return finished + len(queued)

    # -- waiting ------------------------------------------------------------------------------

    async def wait(self, attempt_id: UUID, seconds: float) -> ActionAttempt | None:
        """The attempt once finished, or as it stands when ``seconds`` have passed.

        Results heard by this process wake the waiter at once (no database read on that
        path); every ``POLL_SECONDS`` it also reads the attempt, for results another
        process heard and for timeouts. Once the process is stopping (``drain``) it
        answers within ``POLL_SECONDS`` with the attempt as it stands, so that a long wait
        never holds a shutdown.
        """
        deadline = time.monotonic() + seconds
        done = self._done_event(attempt_id)
        self._waiting[attempt_id] = self._waiting.get(attempt_id, 0) + 1
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining > 0 and not self._draining:
                    try:
                        await asyncio.wait_for(done.wait(), timeout=min(remaining, POLL_SECONDS))
                        done.clear()  # consumed; a wake during the next read sets it again
                    except TimeoutError:
                        pass
                snapshot = self._finished.get(attempt_id)
                if snapshot is not None:
                    return snapshot
                attempt = await self._read(attempt_id)
                if (
                    attempt is None
                    or attempt.status is not AttemptStatus.PENDING
                    or time.monotonic() >= deadline
                    or self._draining
                ):
                    return attempt
        finally:
            self._release(attempt_id)

    def drain(self) -> None:
        """The process is stopping: waits answer with what they have from now on.

        Only a flag the waits poll: the events they sleep on are shared with the watchers,
        which must not take a wake-up for a result."""
        self._draining = True

    async def _read(self, attempt_id: UUID) -> ActionAttempt | None:
        async with self.runtime.read_session_factory() as session:
            return await AttemptRepository(session).by_id(attempt_id)

    def _done_event(self, attempt_id: UUID) -> asyncio.Event:
        event = self._done.get(attempt_id)
        if event is None:
            event = self._done[attempt_id] = asyncio.Event()
        return event

    def _release(self, attempt_id: UUID) -> None:
        left = self._waiting.get(attempt_id, 1) - 1
        if left <= 0:
            self._waiting.pop(attempt_id, None)
            self._done.pop(attempt_id, None)
            self._finished.pop(attempt_id, None)
        else:
            self._waiting[attempt_id] = left

    def _notify(self, attempt: ActionAttempt) -> None:
        if attempt.id in self._waiting:
            self._finished[attempt.id] = attempt
        self._wake(attempt.id)

    def _wake(self, attempt_id: UUID) -> None:
        event = self._done.get(attempt_id)
        if event is not None:
            event.set()

    @staticmethod
    def _finished_message(attempt: ActionAttempt) -> dict[str, Any]:
        return outbox.message(
            "action_attempt.finished",
            partner_id=attempt.partner_id,
            aggregate_id=attempt.id,
            device_id=attempt.device_id,
            site_id=attempt.site_id,
            action=attempt.action,
            status=attempt.status.value,
            error=attempt.error,
            was_confirmed_by_device=attempt.was_confirmed_by_device,
            completed_at=attempt.completed_at,
        )

    async def close(self) -> None:
        for task in list(self._watchers.values()):
            task.cancel()
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
