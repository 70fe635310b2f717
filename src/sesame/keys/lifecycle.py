"""Keys that follow life: households grant and take back resident keys; time moves keys
from scheduled to active to expired.

- **Move-in** (a household is created) gives the person a resident key to the unit, from
  the move-in date (local midnight at the site) to the move-out date, if known.
- **A new move-out date** moves the key's end; a move-out on or before today, or the
  household's removal, **revokes every key of that person at that unit** (shared ones
  with them).
- ``advance`` brings stored statuses up to date with time and uses, once per key, with an
  outbox message for each change. Every process may run it: rows are claimed with
  ``SKIP LOCKED`` and the status check makes the change happen once.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.keys import schedule
from sesame.keys.access import effective_status
from sesame.keys.repository import KeyRepository
from sesame.keys.service import follow_parent, key_message, local_midnight, revoke
from sesame.kit.db import commit, write_intent
from sesame.kit.repository import TenantScope
from sesame.models import Household, Key, KeyKind, KeyReason, KeyStatus, TargetKind
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime
from sesame.sites.repository import SiteRepository, UnitRepository


async def _site_of(session: AsyncSession, household: Household) -> Any:
    return await SiteRepository(session).get(TenantScope.platform(), household.site_id)


def _moved_out(household: Household, today: date) -> bool:
    return household.move_out_on is not None and household.move_out_on <= today


async def on_move_in(session: AsyncSession, runtime: Runtime, household: Household) -> Key | None:
    site = await _site_of(session, household)
    unit = await UnitRepository(session).get(TenantScope.platform(), household.unit_id)
    today = runtime.clock.now().date()
    if site is None or unit is None or _moved_out(household, today):
        return None
    key = Key(
        partner_id=household.partner_id,
        site_id=household.site_id,
        person_id=household.person_id,
        kind=KeyKind.RESIDENT,
        name="resident key",
        target_kind=TargetKind.UNIT,
        building_id=unit.building_id,
        unit_id=unit.id,
        starts_at=local_midnight(household.move_in_on, site) if household.move_in_on else None,
        ends_at=local_midnight(household.move_out_on, site) if household.move_out_on else None,
        household_id=household.id,
        uses_count=0,
        issued_by="household",
        status=KeyStatus.ACTIVE,
    )
    key.status = effective_status(key, runtime.clock.now())
    session.add(key)
    await session.flush()
    await outbox.append(session, [key_message("key.issued", key, reason=KeyReason.MOVE_IN.value)])
    await schedule.follow(session, runtime, [key])
    return key


async def on_household_change(
    session: AsyncSession, runtime: Runtime, household: Household
) -> None:
    if _moved_out(household, runtime.clock.now().date()):
        await on_move_out(session, runtime, household)
        return
    key = await KeyRepository(session).for_household(household.id)
    site = await _site_of(session, household)
    if key is None or site is None or key.status is KeyStatus.REVOKED:
        return
    key.starts_at = local_midnight(household.move_in_on, site) if household.move_in_on else None
    key.ends_at = local_midnight(household.move_out_on, site) if household.move_out_on else None
    if key.status is not KeyStatus.SUSPENDED:
        key.status = effective_status(key, runtime.clock.now())
    await schedule.follow(session, runtime, [key])
    await follow_parent(session, runtime, key)


async def on_move_out(session: AsyncSession, runtime: Runtime, household: Household) -> None:
    """Every key of the person at the unit goes, whatever its kind."""
    keys = await KeyRepository(session).live_for_person_at_unit(
        household.person_id, household.unit_id
    )
    for key in keys:
        await revoke(session, runtime, key, KeyReason.MOVED_OUT)


async def advance(runtime: Runtime) -> int:
    """Move stored statuses along with time and uses; returns how many changed."""
    changed = 0
    with write_intent():
        async with runtime.session_factory() as session:
            now = runtime.clock.now()
            messages = []
            expired: list[Key] = []
            for key in await KeyRepository(session).due(now):
                status = effective_status(key, now)
                if status is key.status:
                    continue
                key.status = status
                changed += 1
                topic = "key.activated" if status is KeyStatus.ACTIVE else "key.expired"
                messages.append(key_message(topic, key))
                if status is KeyStatus.EXPIRED:
                    expired.append(key)
            await outbox.append(session, messages)
            for key in expired:
                await follow_parent(session, runtime, key)
            await commit(session)
    return changed
