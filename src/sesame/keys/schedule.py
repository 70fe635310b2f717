"""When a key or a lock next needs time-driven work, and the job that does it.

Called in the transaction that changes a key or a PIN code, so the job exists exactly
when the change does; the handlers are in ``sesame.keys.timing``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.jobs import service as jobs
from sesame.keys.access import Schedule, effective_status
from sesame.keys.repository import KeyRepository, PinCodeRepository
from sesame.models import Key, KeyStatus, PinCode, Site
from sesame.runtime import Runtime

KEY_TIMING = "key.timing"
PIN_LOCK = "pins.lock"
FINAL = (KeyStatus.REVOKED, KeyStatus.EXPIRED)
SCHEDULE_HORIZON = timedelta(days=8)  # a weekly schedule's next window is within it
UTC_ZONE = ZoneInfo("UTC")


def next_boundary(key: Key, now: datetime) -> datetime | None:
    """When the key's status next changes with time alone, if ever."""
    status = effective_status(key, now)
    if status is KeyStatus.SCHEDULED and key.starts_at is not None:
        return key.starts_at
    if status is KeyStatus.ACTIVE and key.ends_at is not None:
        return key.ends_at
    return None


async def follow(session: AsyncSession, runtime: Runtime, keys: Sequence[Key]) -> None:
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
    # Codes tied to these keys follow them (a revocation, a new schedule): their locks'
    # jobs look again now.
    devices = await PinCodeRepository(session).devices_of_keys([key.id for key in keys])
    for device_id in devices:
        await follow_lock(session, runtime, device_id, at_once=True)


@dataclass(frozen=True)
class LockTerms:
    """What decides when each code of a lock belongs on it, besides the code's own window:
    the key it is tied to, if any, and the site's time zone (for the key's schedule).

    A code tied to a key follows it: off the lock while the key is suspended, taken off
    for good once the key is revoked or has expired, and — for a key with a recurring
    schedule — on the lock only within the schedule's windows, programmed at each
    window's start and removed at its end (local hours in the site's zone, so across
    daylight-saving changes too). The lead time applies to one-off starts only: a
    recurring window is not opened early, since the lock would let the code in."""

    keys: dict[UUID, Key]
    zone: ZoneInfo
    # A key given from another (a shared key, a guest pass), with the keys above it: its
    # code follows them all. Keys not in it stand alone.
    lineages: dict[UUID, list[Key]] = field(default_factory=dict)

    def key_of(self, pin: PinCode) -> Key | None:
        return self.keys.get(pin.key_id) if pin.key_id is not None else None

    def _lineage(self, pin: PinCode) -> list[Key]:
        key = self.key_of(pin)
        return [] if key is None else self.lineages.get(key.id, [key])

    def finished(self, pin: PinCode, now: datetime) -> bool:
        """The code is done with the lock for good."""
        if not pin.wanted or (pin.ends_at is not None and pin.ends_at <= now):
            return True
        return any(effective_status(k, now) in FINAL for k in self._lineage(pin))

    def belongs(self, pin: PinCode, now: datetime, lead: timedelta) -> bool:
        """Whether the code should be on its lock at ``now``."""
        if self.finished(pin, now):
            return False
        lineage = self._lineage(pin)
        starts = [t for t in (pin.starts_at, *(k.starts_at for k in lineage)) if t is not None]
        if starts and max(starts) - lead > now:
            return False
        if any(effective_status(k, now) is KeyStatus.SUSPENDED for k in lineage):
            return False
        rules = [r for r in (Schedule.parse(k.schedule) for k in lineage) if r is not None]
        return all(r.allows(now, self.zone) for r in rules)

    def next_moment(self, pin: PinCode, now: datetime, lead: timedelta) -> datetime | None:
        """When ``belongs`` may next change its answer for this code, if ever."""
        if self.finished(pin, now):
            return None
        lineage = self._lineage(pin)
        times = [
            start - lead
            for start in (pin.starts_at, *(k.starts_at for k in lineage))
            if start is not None and start - lead > now
        ]
        times += [
            end
            for end in (pin.ends_at, *(k.ends_at for k in lineage))
            if end is not None and end > now
        ]
        for rules in (Schedule.parse(k.schedule) for k in lineage):
            if rules is None:
                continue
            for opens, closes in rules.intervals(now, now + SCHEDULE_HORIZON, self.zone):
                times += [t for t in (opens, closes) if t > now]
        return min(times, default=None)


async def terms_for(session: AsyncSession, codes: Sequence[PinCode]) -> LockTerms:
    """The keys a lock's codes are tied to (with the keys they were given from), and
    their site's zone (read only if needed)."""
    key_ids = {pin.key_id for pin in codes if pin.key_id is not None}
    repository = KeyRepository(session)
    keys = await repository.by_ids(key_ids) if key_ids else {}
    lineages = await repository.lineages(list(keys.values()))
    zone = UTC_ZONE
    if any(key.schedule for lineage in lineages.values() for key in lineage):
        site = await session.get(Site, codes[0].site_id)
        if site is not None:
            zone = ZoneInfo(site.time_zone)
    return LockTerms(keys, zone, lineages)


def lock_boundary(
    codes: Iterable[PinCode], terms: LockTerms, now: datetime, lead: timedelta
) -> datetime | None:
    """When the lock's codes next need work: one enters its lead time, a key's schedule
    window opens or closes, or one ends."""
    times = [terms.next_moment(pin, now, lead) for pin in codes]
    return min((t for t in times if t is not None), default=None)


async def follow_lock(
    session: AsyncSession, runtime: Runtime, device_id: UUID, *, at_once: bool = False
) -> None:
    """(Re)schedule the lock's PIN job for its next boundary, in the caller's transaction;
    ``at_once``: now (something its codes depend on changed)."""
    now = runtime.clock.now()
    lead = timedelta(minutes=runtime.settings.pin_lead_minutes)
    codes = await PinCodeRepository(session).on_device(device_id)
    due = now if at_once else lock_boundary(codes, await terms_for(session, codes), now, lead)
    job_key = f"{PIN_LOCK}:{device_id}"
    if due is None:
        await jobs.cancel(session, job_key)
        return
    await jobs.schedule(
        session, runtime, PIN_LOCK, key=job_key, due_at=due, payload={"device_id": str(device_id)}
    )
