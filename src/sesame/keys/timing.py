"""Time-driven key work, as durable jobs (``sesame.jobs``).

- ``key.timing`` — one job per key with a start or an end: due at its next boundary
  (activation, then expiry). It brings the key's stored status up to date with an outbox
  message, has its site's readers sent a fresh trust document (``trust.site``, a job for
  a process with the device gateway), and comes back for the next boundary. Missed while
  the service was down, it runs at start-up: a key that expired meanwhile is expired at
  once.
- ``pins.lock`` — one job per PIN lock with codes to come or to go: due when a code
  enters its lead time (``SESAME_PIN_LEAD_MINUTES`` before it starts), when a window of
  its key's recurring schedule opens or closes, or when it ends; it runs the lock's
  reconciler and comes back for the next such moment. A change to a key (revoked,
  suspended, a new schedule) has its codes' locks looked at again at once.
- ``keys.sweep`` and ``pins.sweep`` — recurring, every minute: the safety net for keys
  and codes whose own job is missing (written before jobs existed) and the retry of
  codes whose lock was offline.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.jobs import service as jobs
from sesame.jobs.repository import JobRepository
from sesame.keys import lifecycle, pins, trust
from sesame.keys.access import effective_status
from sesame.keys.repository import KeyRepository, PinCodeRepository
from sesame.keys.schedule import (
    KEY_TIMING,
    PIN_LOCK,
    LockTerms,
    lock_boundary,
    next_boundary,
    terms_for,
)
from sesame.keys.service import follow_parent, key_message
from sesame.models import KeyStatus, PinStatus
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime

EVERY_MINUTE = "* * * * *"
TRUST_SITE = "trust.site"


@jobs.handler(KEY_TIMING)
async def key_timing(run: jobs.JobRun) -> None:
    now = run.runtime.clock.now()
    key = await KeyRepository(run.session).by_id(UUID(run.payload["key_id"]), lock=True)
    if key is None:
        return  # deleted since
    status = effective_status(key, now)
    if status is not key.status and key.status in (KeyStatus.SCHEDULED, KeyStatus.ACTIVE):
        key.status = status
        topic = "key.activated" if status is KeyStatus.ACTIVE else "key.expired"
        await outbox.append(run.session, [key_message(topic, key)])
        # The readers' trust document lists keys that ended early; a process with the
        # device gateway sends it (this one may have none).
        await jobs.schedule(
            run.session,
            run.runtime,
            TRUST_SITE,
            key=f"{TRUST_SITE}:{key.site_id}",
            due_at=now,
            payload={"site_id": str(key.site_id)},
        )
        if status is KeyStatus.EXPIRED:
            await follow_parent(run.session, run.runtime, key)  # what was given from it ends
    run.again_at = next_boundary(key, now)


@jobs.handler(TRUST_SITE, own_transactions=True, needs_devices=True)
async def trust_site(run: jobs.JobRun) -> None:
    await trust.publish_site(run.runtime, UUID(run.payload["site_id"]))


@jobs.handler(PIN_LOCK, own_transactions=True, needs_devices=True)
async def pin_lock(run: jobs.JobRun) -> None:
    device_id = UUID(run.payload["device_id"])
    if run.runtime.gateway is None:
        raise jobs.RetryLater("this process has no device gateway")
    await pins.reconcile(run.runtime, device_id)
    now = run.runtime.clock.now()
    lead = timedelta(minutes=run.runtime.settings.pin_lead_minutes)
    async with run.runtime.read_session_factory() as session:
        codes = await PinCodeRepository(session).on_device(device_id)
        terms = await terms_for(session, codes)
    run.again_at = lock_boundary(codes, terms, now, lead)


@jobs.handler("keys.sweep", own_transactions=True)
async def keys_sweep(run: jobs.JobRun) -> None:
    await lifecycle.advance(run.runtime)


@jobs.handler("pins.sweep", own_transactions=True, needs_devices=True)
async def pins_sweep(run: jobs.JobRun) -> None:
    runtime = run.runtime
    if runtime.gateway is None or not runtime.gateway.connected:
        return
    now = runtime.clock.now()
    lead = timedelta(minutes=runtime.settings.pin_lead_minutes)
    # A read session: the job's own would take SQLite's write lock, which the
    # reconciler's transactions then wait for.
    async with runtime.read_session_factory() as session:
        repository = PinCodeRepository(session)
        devices = set(await repository.needing_work(now, now + lead))
        for pin, key, zone in await repository.tied_to_keys():
            belongs = LockTerms({key.id: key}, ZoneInfo(zone)).belongs(pin, now, lead)
            retry = pin.error is None or pin.error.get("code") == "device_offline"
            if (pin.status is PinStatus.UNSET and belongs and retry) or (
                pin.status in (PinStatus.SET, PinStatus.REMOVING) and not belongs
            ):
                devices.add(pin.device_id)
    for device_id in devices:
        await pins.reconcile(runtime, device_id)


async def install_recurring(session: AsyncSession, runtime: Runtime) -> None:
    """The sweeps, scheduled once for the whole installation."""
    repository = JobRepository(session)
    for kind in ("keys.sweep", "pins.sweep"):
        if await repository.by_key(kind) is None:
            await jobs.schedule(
                session, runtime, kind, key=kind, cron=EVERY_MINUTE, time_zone="UTC"
            )
