"""What residents do with their own keys: open doors, share, invite guests, carry
credentials for offline readers.

A resident reaches only what their keys reach. An entrance their keys do not cover at a
site where they hold no key is "not found"; at their own site, a refusal names its
reason and is written to the access log, like every grant.

What a resident does is recorded under the person record they act through (the holder
of the key used, shared or given), never their phone number; the keys they give are
named as they typed or by a neutral default.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.auth.principal import Principal
from sesame.devices import protocol
from sesame.devices.drivers.native import OPEN_ACTIONS
from sesame.devices.repository import DeviceRepository
from sesame.devices.service import NoDevice, engine_of, require_online
from sesame.keys import credentials, schedule
from sesame.keys.access import (
    Refusal,
    Schedule,
    Terms,
    best_refusal,
    covers,
    lineage_refusal,
)
from sesame.keys.repository import AccessEventRepository, KeyRepository
from sesame.keys.schemas import GuestPassRequest, ShareRequest
from sesame.keys.service import (
    NotCoveredByParent,
    initial_status,
    key_message,
    place_of,
    places_of,
    refuse_past_end,
    revoke,
)
from sesame.kit.errors import Conflict, FieldError, Forbidden, NotFound, SesameError
from sesame.kit.repository import TenantScope
from sesame.models import (
    AccessEvent,
    AccessMethod,
    AccessResult,
    ActionAttempt,
    Household,
    Key,
    KeyKind,
    KeyReason,
    KeyStatus,
    Person,
    PersonKind,
    Site,
    TargetKind,
)
from sesame.outbox import repository as outbox
from sesame.outbox.actor import acting_as
from sesame.people.repository import HouseholdRepository, PersonRepository
from sesame.runtime import Runtime
from sesame.sites.repository import EntranceRepository, SiteRepository

UTC_ZONE = ZoneInfo("UTC")  # stands in when no key has a schedule to read
SHARED_KEY_NAME = "Shared key"
GUEST_PASS_NAME = "Guest pass"  # noqa: S105 - a label, not a password

PLATFORM = TenantScope.platform()
# An open-ended key given from another must open at some moment within this (a weekly
# schedule repeats within it).
COVERAGE_HORIZON = timedelta(days=8)


class AccessDenied(SesameError):
    status = 403
    type = "access_denied"


class SharingNotAllowed(SesameError):
    status = 403
    type = "sharing_not_allowed"


class SharingLimitReached(Conflict):
    type = "sharing_limit_reached"


@dataclass(frozen=True)
class Derived:
    """The terms of a key to be given from another: what was asked, within its parent."""

    starts_at: datetime | None
    ends_at: datetime | None
    schedule: dict[str, Any] | None
    seconds: float  # how long it may open in the coming window (0: never)


def _derive(
    lineage: list[Key],
    starts_at: datetime | None,
    ends_at: datetime | None,
    wanted: dict[str, Any] | None,
    now: datetime,
    zone: ZoneInfo,
) -> Derived:
    """The intersection of what is asked with the parent's lineage. Its window is the
    overlap of both; a schedule asked for must lie inside every schedule of the lineage
    (422 otherwise), and none asked for means the parent's."""
    terms = Terms.of(lineage)
    own = Schedule.parse(wanted)
    if own is not None and not all(own.within(theirs) for theirs in terms.schedules):
        raise NotCoveredByParent(
            "the schedule asked for is outside your key's",
            errors=[FieldError(("body", "schedule"), "outside its parent's", "parent")],
        )
    starts = max(filter(None, (terms.starts_at, starts_at)), default=None)
    ends = min(filter(None, (terms.ends_at, ends_at)), default=None)
    inherited = next((k.schedule for k in lineage if k.schedule is not None), None)
    schedule_raw = wanted if own is not None else inherited
    child = Terms(starts, ends, terms.schedules + ((own,) if own is not None else ()))
    begin = max(now, starts) if starts else now
    finish = ends or begin + COVERAGE_HORIZON
    seconds = sum((b - a).total_seconds() for a, b in child.intervals(begin, finish, zone))
    return Derived(starts, ends, schedule_raw, seconds)


async def _site(session: AsyncSession, site_id: UUID) -> Site:
    site = await SiteRepository(session).get(PLATFORM, site_id)
    if site is None:
        raise NotFound("site not found")
    return site


async def open_entrance(
    session: AsyncSession,
    runtime: Runtime,
    principal: Principal,
    entrance_id: UUID,
    duration_s: int | None,
    ttl_seconds: int | None,
    *,
    queue: bool = False,
) -> tuple[ActionAttempt, protocol.Command | None]:
    """A resident's remote open: the key check, the access log, then the device (known
    offline: a ``device_offline`` error, unless ``queue``)."""
    entrance = await EntranceRepository(session).get(PLATFORM, entrance_id)
    keys = (
        await KeyRepository(session).of_people(
            sorted(principal.person_ids), site_id=entrance.site_id
        )
        if entrance is not None
        else []
    )
    if entrance is None or not keys:
        raise NotFound(f"entrance {entrance_id} not found")
    now = runtime.clock.now()
    place = place_of(entrance)
    lineages = await KeyRepository(session).lineages(keys)
    # The site's time zone matters only to scheduled keys: no query for the others.
    zone = (
        ZoneInfo((await _site(session, entrance.site_id)).time_zone)
        if any(k.schedule is not None for chain in lineages.values() for k in chain)
        else UTC_ZONE
    )
    refused: list[tuple[Refusal, Key]] = []
    chosen = None
    for key in keys:
        reason = lineage_refusal(lineages[key.id], place, now, zone)
        if reason is None:
            chosen = key
            break
        refused.append((reason, key))
    log = AccessEventRepository(session)
    event = AccessEvent(
        partner_id=entrance.partner_id,
        site_id=entrance.site_id,
        at=now,
        method=AccessMethod.REMOTE,
        entrance_id=entrance.id,
        person_id=(chosen or keys[0]).person_id,
    )
    spent = chosen is not None and await KeyRepository(session).spend_use(chosen.id)
    if chosen is None or not spent:
        if chosen is None:
            reason = best_refusal([r for r, _ in refused])
            refused_key = next((k for r, k in refused if r is reason), None)
        else:
            reason, refused_key = Refusal.USES_EXHAUSTED, chosen
        event.result, event.reason = AccessResult.DENIED, reason.value
        event.key_id = refused_key.id if refused_key else None
        await log.add_many([event])
        raise AccessDenied(f"access denied: {reason.value}", reason=reason.value, keep_changes=True)
    found = await DeviceRepository(session).opener_of(PLATFORM, entrance.id, list(OPEN_ACTIONS))
    if found is None:
        raise NoDevice("no active device can open this entrance")
    device, unfinished = found
    require_online(device, queue=queue)  # nothing is logged nor spent: the request fails
    action = OPEN_ACTIONS[device.kind]
    params = {"duration_s": duration_s} if duration_s is not None and action == "open" else {}
    attempt, command = await engine_of(runtime).submit(
        session,
        device,
        action,
        params,
        ttl_seconds=ttl_seconds,
        requested_by=principal.reference(chosen.person_id),
        locked=True,
        unfinished=unfinished,
    )
    event.result, event.key_id, event.device_id = AccessResult.GRANTED, chosen.id, device.id
    event.action_attempt_id = attempt.id
    await log.add_many([event])
    used = key_message(
        "key.used",
        chosen,
        method="remote",
        entrance_id_used=entrance.id,
        action_attempt_id=attempt.id,
    )
    used["payload"]["actor"] = principal.actor(chosen.person_id)
    await outbox.append(session, [used])
    return attempt, command


def _held(key: Key | None, principal: Principal) -> Key:
    if key is None or key.person_id not in principal.person_ids:
        raise NotFound("key not found")
    return key


async def share(
    session: AsyncSession,
    runtime: Runtime,
    principal: Principal,
    key_id: UUID,
    request: ShareRequest,
) -> Key:
    """A resident gives a household member a key to their unit, within the site's policy."""
    parent = _held(await KeyRepository(session).by_id(key_id, lock=True), principal)
    now = runtime.clock.now()
    if parent.kind is not KeyKind.RESIDENT or parent.unit_id is None:
        raise SharingNotAllowed("only a resident key can be shared")
    if parent.status not in (KeyStatus.ACTIVE, KeyStatus.SCHEDULED):
        raise SharingNotAllowed(f"the key is {parent.status.value}")
    refuse_past_end(request.ends_at, now)
    site = await _site(session, parent.site_id)
    household = (
        await HouseholdRepository(session).get(PLATFORM, parent.household_id)
        if parent.household_id
        else None
    )
    role = household.role.value if isinstance(household, Household) else None
    if role not in (site.sharing_roles or []):
        raise SharingNotAllowed(
            f"the site lets {', '.join(site.sharing_roles or [])} share keys", role=role
        )
    if await KeyRepository(session).shared_count(parent.unit_id) >= site.max_shared_keys_per_unit:
        raise SharingLimitReached(
            f"the unit already has {site.max_shared_keys_per_unit} shared keys",
            limit=site.max_shared_keys_per_unit,
        )
    lineage = await KeyRepository(session).lineage(parent)
    derived = _derive(
        lineage,
        request.starts_at,
        request.ends_at,
        request.schedule.model_dump() if request.schedule else None,
        now,
        ZoneInfo(site.time_zone),
    )
    if not derived.seconds:
        raise NotCoveredByParent("your key does not open at any time of this window and schedule")
    person = await _person(
        session, parent.partner_id, parent.site_id, request.phone, request.name, PersonKind.RESIDENT
    )
    key = Key(
        partner_id=parent.partner_id,
        site_id=parent.site_id,
        person_id=person.id,
        kind=KeyKind.HOUSEHOLD,
        name=request.key_name or SHARED_KEY_NAME,
        target_kind=TargetKind.UNIT,
        building_id=parent.building_id,
        unit_id=parent.unit_id,
        starts_at=derived.starts_at,
        ends_at=derived.ends_at,
        schedule=derived.schedule,
        parent_key_id=parent.id,
        uses_count=0,
        issued_by=principal.reference(parent.person_id),
        issued_by_person_id=parent.person_id,
        status=KeyStatus.ACTIVE,
    )
    key.status = initial_status(key, now)
    session.add(key)
    await session.flush()
    with acting_as(principal.actor(parent.person_id)):
        await outbox.append(session, [key_message("key.shared", key)])
    await schedule.follow(session, runtime, [key])
    return key


async def _person(
    session: AsyncSession, partner_id: UUID, site_id: UUID, phone: str, name: str, kind: PersonKind
) -> Person:
    people = PersonRepository(session)
    person = await people.find_by(TenantScope(partner_id=partner_id), phone=phone)
    if person is None:
        person = Person(
            partner_id=partner_id,
            site_id=site_id,
            phone=phone,
            name=name,
            locale="ko-KR",
            kind=kind,
        )
        await people.add(person)
    return person


async def guest_pass(
    session: AsyncSession, runtime: Runtime, principal: Principal, request: GuestPassRequest
) -> tuple[Key, str]:
    """A time-boxed pass for a guest, to one entrance the resident's keys open."""
    entrance = await EntranceRepository(session).get(PLATFORM, request.entrance_id)
    held = (
        await KeyRepository(session).of_people(
            sorted(principal.person_ids), site_id=entrance.site_id, lock=True
        )
        if entrance is not None
        else []
    )
    if entrance is None or not held:
        raise NotFound(f"entrance {request.entrance_id} not found")
    site = await _site(session, entrance.site_id)
    now = runtime.clock.now()
    zone = ZoneInfo(site.time_zone)
    place = place_of(entrance)
    lineages = await KeyRepository(session).lineages(held)
    hosts = [
        k
        for k in held
        if covers(k, place)
        and lineage_refusal(lineages[k.id], place, now, zone)
        in (None, Refusal.OUTSIDE_SCHEDULE, Refusal.NOT_YET_VALID)
    ]
    if not hosts:
        raise Forbidden("your keys do not open this entrance")
    refuse_past_end(request.ends_at, now)
    starts = request.starts_at or now
    ends = request.ends_at or starts + timedelta(hours=24)
    wanted = request.schedule.model_dump() if request.schedule else None
    # The best covering key: the one under which the pass may open longest.
    host, derived = max(
        ((k, _derive(lineages[k.id], starts, ends, wanted, now, zone)) for k in hosts),
        key=lambda pair: pair[1].seconds,
    )
    if not derived.seconds:
        raise NotCoveredByParent("your keys do not open this entrance at any time of this window")
    guest = await _person(
        session,
        entrance.partner_id,
        entrance.site_id,
        request.guest_phone,
        request.guest_name,
        PersonKind.GUEST,
    )
    key = Key(
        partner_id=entrance.partner_id,
        site_id=entrance.site_id,
        person_id=guest.id,
        kind=KeyKind.GUEST,
        name=request.key_name or GUEST_PASS_NAME,
        target_kind=TargetKind.ENTRANCE,
        entrance_id=entrance.id,
        building_id=entrance.building_id,
        unit_id=entrance.unit_id,
        starts_at=derived.starts_at,
        ends_at=derived.ends_at,
        schedule=derived.schedule,
        max_uses=request.max_uses,
        uses_count=0,
        parent_key_id=host.id,
        issued_by=principal.reference(host.person_id),
        issued_by_person_id=host.person_id,
        pass_id=uuid.uuid4(),
        status=KeyStatus.ACTIVE,
    )
    key.status = initial_status(key, now)
    session.add(key)
    await session.flush()
    token = await credentials.guest_pass(session, runtime, key, site, entrance.id)
    await schedule.follow(session, runtime, [key])
    issued = credentials.issued_message(
        key, [{"credential_id": key.pass_id, "entrance_id": entrance.id, "uses": key.max_uses or 1}]
    )
    with acting_as(principal.actor(host.person_id)):
        await outbox.append(
            session,
            [key_message("key.issued", key, reason=KeyReason.GUEST_PASS.value), issued],
        )
    return key, token


async def revoke_issued(
    session: AsyncSession, runtime: Runtime, principal: Principal, key_id: UUID
) -> None:
    """A resident takes back a key they shared or a pass they gave."""
    key = await KeyRepository(session).by_id(key_id)
    if key is None or key.issued_by_person_id not in principal.person_ids:
        raise NotFound("key not found")
    with acting_as(principal.actor(key.issued_by_person_id)):
        await revoke(session, runtime, key, KeyReason.REVOKED_BY_RESIDENT)


async def mobile_credentials(
    session: AsyncSession, runtime: Runtime, principal: Principal, per_entrance: int
) -> list[dict[str, Any]]:
    """Single-use tokens for every entrance the resident's live keys open."""
    now = runtime.clock.now()
    issued: list[dict[str, Any]] = []
    keys = await KeyRepository(session).of_people(sorted(principal.person_ids), lock=True)
    messages = []
    for key in keys:
        if key.status not in (KeyStatus.ACTIVE, KeyStatus.SCHEDULED) or (
            key.ends_at is not None and key.ends_at <= now
        ):
            continue
        site = await _site(session, key.site_id)
        places = await places_of(session, key)
        tokens = await credentials.mobile_credentials(
            session, runtime, key, site, places, per_entrance=per_entrance
        )
        issued.extend({"key_id": key.id, **token} for token in tokens)
        if tokens:
            message = credentials.issued_message(key, tokens)
            message["payload"]["actor"] = principal.actor(key.person_id)
            messages.append(message)
    await outbox.append(session, messages)
    return issued


async def credentials_of_key(
    session: AsyncSession, runtime: Runtime, key: Key, per_entrance: int
) -> list[dict[str, Any]]:
    """Single-use tokens of one key (staff or a partner asking), as its holder gets them."""
    now = runtime.clock.now()
    locked = await KeyRepository(session).by_id(key.id, lock=True)
    if (
        locked is None
        or locked.status not in (KeyStatus.ACTIVE, KeyStatus.SCHEDULED)
        or (locked.ends_at is not None and locked.ends_at <= now)
    ):
        return []
    site = await _site(session, locked.site_id)
    tokens = await credentials.mobile_credentials(
        session, runtime, locked, site, await places_of(session, locked), per_entrance=per_entrance
    )
    if tokens:
        await outbox.append(session, [credentials.issued_message(locked, tokens)])
    return [{"key_id": locked.id, **token} for token in tokens]


async def my_keys(session: AsyncSession, principal: Principal) -> list[Key]:
    repository = KeyRepository(session)
    held = list(await repository.of_people(sorted(principal.person_ids)))
    given = [
        k
        for k in await repository.issued_by_people(sorted(principal.person_ids))
        if k.id not in {h.id for h in held}
    ]
    return held + given
