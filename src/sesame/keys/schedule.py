"""When a key or a lock next needs time-driven work, and the job that does it.

Called in the transaction that changes a key or a PIN code, so the job exists exactly
when the change does; the handlers are in ``sesame.keys.timing``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.jobs import service as jobs
from sesame.keys.access import effective_status
from sesame.keys.repository import PinCodeRepository
from sesame.models import Key, KeyStatus, PinCode, PinStatus
from sesame.runtime import Runtime

KEY_TIMING = "key.timing"
PIN_LOCK = "pins.lock"


def next_boundary(key: Key, now: datetime) -> datetime | None:
    """When the key's status next changes with time alone, if ever."""
    status = effective_status(key, now)
    if status is KeyStatus.SCHEDULED and key.starts_at is not None:
        return key.starts_at
    if status is KeyStatus.ACTIVE and key.ends_at is not None:
        return key.ends_at
    return None


async def follow(session: AsyncSession, runtime: Runtime, keys: Iterable[Key]) -> None:
    """(Re)schedule the timing job of each key, in the caller's transaction."""
    now = runtime.clock.now()
    for key in keys:
        due = next_boundary(key, now)
        job_key = f"{KEY_TIMING}:{key.id}"
        if due is None:
            await jobs.cancel(session, job_key)
            continue
        await jobs.schedule(
            session,
            runtime,
            KEY_TIMING,
            key=job_key,
            due_at=due,
            payload={"key_id": str(key.id)},
            partner_id=key.partner_id,
        )


def lock_boundary(codes: Iterable[PinCode], now: datetime, lead: timedelta) -> datetime | None:
    """When the lock's codes next need work: one enters its lead time, or one ends."""
    times = []
    for pin in codes:
        if not pin.wanted:
            continue
        if pin.status is PinStatus.UNSET and pin.starts_at is not None:
            enters = pin.starts_at - lead
            if enters > now:
                times.append(enters)
        if pin.ends_at is not None and pin.ends_at > now:
            times.append(pin.ends_at)
    return min(times, default=None)


async def follow_lock(session: AsyncSession, runtime: Runtime, device_id: UUID) -> None:
    """(Re)schedule the lock's PIN job for its next boundary, in the caller's transaction."""
    now = runtime.clock.now()
    lead = timedelta(minutes=runtime.settings.pin_lead_minutes)
    due = lock_boundary(await PinCodeRepository(session).on_device(device_id), now, lead)
    job_key = f"{PIN_LOCK}:{device_id}"
    if due is None:
        await jobs.cancel(session, job_key)
        return
    await jobs.schedule(
        session, runtime, PIN_LOCK, key=job_key, due_at=due, payload={"device_id": str(device_id)}
    )
