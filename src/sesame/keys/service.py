"""Issuing, changing and revoking keys, and the key lifecycle.

- Staff issue keys of every kind for a person of their partner, to one target in their
  scope. Resident keys also come and go by themselves with households (``lifecycle``).
- Revocation takes effect at once: the key's status changes in the request's
  transaction, keys shared from it go with it, and every reader of the site gets a new
  trust document after the commit.
- A key given from another never exceeds it (``follow_parent``): when the parent's
  window shrinks, it expires, is suspended or resumed, the keys given from it follow in
  the same transaction — their window, status, timing jobs and the readers' trust.
- Every change that matters to the ledger or to notifications is an outbox message:
  ``key.issued``, ``key.shared``, ``key.revoked``, ``key.suspended``, ``key.resumed``,
  ``key.activated``, ``key.expired``, ``key.used``.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.api.crud import CrudService
from sesame.auth.principal import Action, Group
from sesame.keys import schedule, trust
from sesame.keys.access import Place, Schedule, covers, effective_status
from sesame.keys.repository import KeyRepository
from sesame.keys.schemas import KeyCreate
from sesame.kit.db import after_commit
from sesame.kit.errors import FieldError, NotFound, ValidationFailed
from sesame.kit.repository import TenantScope
from sesame.models import Entrance, Key, KeyKind, KeyReason, KeyStatus, Site, TargetKind
from sesame.outbox import repository as outbox
from sesame.people.repository import PersonRepository
from sesame.runtime import Runtime
from sesame.sites.repository import (
    BuildingRepository,
    EntranceRepository,
    SiteRepository,
    UnitRepository,
)


def key_message(topic: str, key: Key, **extra: Any) -> dict[str, Any]:
    return outbox.message(
        topic,
        partner_id=key.partner_id,
        aggregate_id=key.id,
        site_id=key.site_id,
        person_id=key.person_id,
        kind=key.kind.value,
        target_kind=key.target_kind.value,
        unit_id=key.unit_id,
        building_id=key.building_id,
        entrance_id=key.entrance_id,
        starts_at=key.starts_at,
        ends_at=key.ends_at,
        max_uses=key.max_uses,
        schedule=key.schedule,
        parent_key_id=key.parent_key_id,
        **extra,
    )


def refuse_past_end(ends_at: datetime | None, now: datetime) -> None:
    """A key, share or pass that would be over before it is issued is a mistake to
    report, not an expired key to store."""
    if ends_at is not None and ends_at <= now:
        raise ValidationFailed(
            "ends_at is already past",
            errors=[FieldError(("body", "ends_at"), "already past", "in_the_past")],
        )


def initial_status(key: Key, now: datetime) -> KeyStatus:
    key.status = KeyStatus.ACTIVE
    return effective_status(key, now)


async def revoke(session: AsyncSession, runtime: Runtime, key: Key, reason: KeyReason) -> list[Key]:
    """Revoke a key and the keys shared from it; readers hear of it after the commit.

    The reason is a code, stored and recorded as is: who revoked is the event's actor."""
    now = runtime.clock.now()
    revoked = []
    pending = [key]
    while pending:
        current = pending.pop()
        if current.status is KeyStatus.REVOKED:
            continue
        current.status = KeyStatus.REVOKED
        current.revoked_at = now
        current.revoked_reason = reason.value
        revoked.append(current)
        pending += list(await KeyRepository(session).children(current.id))
    await session.flush()
    await outbox.append(
        session, [key_message("key.revoked", k, reason=reason.value) for k in revoked]
    )
    await schedule.follow(session, runtime, revoked)  # no more timing; its PIN codes go
    announce(session, runtime, {k.site_id for k in revoked})
    return revoked


async def follow_parent(session: AsyncSession, runtime: Runtime, parent: Key) -> list[Key]:
    """Bring the keys given from ``parent`` (and from them) back within it after it
    changed: a window no wider than the parent's (ending now if the parent ran out of
    uses), suspended while it is, resumed with it. Returns the keys that changed."""
    now = runtime.clock.now()
    changed: list[Key] = []
    descendants: list[Key] = []
    messages = []
    pending = [parent]
    while pending:
        current = pending.pop()
        status = effective_status(current, now)
        end = current.ends_at
        if status is KeyStatus.EXPIRED:
            end = min(filter(None, (end, now)))
        for child in await KeyRepository(session).children(current.id):
            before = (child.status, child.starts_at, child.ends_at)
            child.starts_at = max(filter(None, (child.starts_at, current.starts_at)), default=None)
            child.ends_at = min(filter(None, (child.ends_at, end)), default=None)
            topic = None
            if status is KeyStatus.SUSPENDED and child.status is not KeyStatus.SUSPENDED:
                child.status, child.suspended_with_parent = KeyStatus.SUSPENDED, True
                topic = "key.suspended"
            elif status is not KeyStatus.SUSPENDED and child.suspended_with_parent:
                child.suspended_with_parent = False
                child.status = initial_status(child, now)
                topic = "key.resumed"
            elif child.status is not KeyStatus.SUSPENDED:
                child.status = initial_status(child, now)
                if child.status is not before[0]:
                    topic = "key.activated" if child.status is KeyStatus.ACTIVE else "key.expired"
            if (child.status, child.starts_at, child.ends_at) != before:
                changed.append(child)
            descendants.append(child)
            pending.append(child)
            if topic is not None:
                messages.append(key_message(topic, child, reason="parent"))
    await session.flush()
    await outbox.append(session, messages)
    # Every descendant: their timing jobs, and the PIN codes tied to them (which follow
    # the parent's schedule too), look again.
    await schedule.follow(session, runtime, descendants)
    announce(session, runtime, {k.site_id for k in changed})
    return changed


def check_within_parent(key: Key, parent: Key) -> None:
    """A key given from ``parent`` may narrow it, never widen it: 422 otherwise."""
    problems = []
    if parent.ends_at is not None and (key.ends_at is None or key.ends_at > parent.ends_at):
        problems.append(FieldError(("body", "ends_at"), "after its parent key ends", "parent"))
    if parent.starts_at is not None and (key.starts_at is None or key.starts_at < parent.starts_at):
        problems.append(FieldError(("body", "starts_at"), "before its parent key starts", "parent"))
    own, theirs = Schedule.parse(key.schedule), Schedule.parse(parent.schedule)
    if theirs is not None and (own is None or not own.within(theirs)):
        problems.append(
            FieldError(("body", "schedule"), "outside its parent key's schedule", "parent")
        )
    if problems:
        raise NotCoveredByParent("a key given from another cannot exceed it", errors=problems)


class NotCoveredByParent(ValidationFailed):
    type = "not_covered_by_parent"


def announce(session: AsyncSession, runtime: Runtime, site_ids: set[UUID]) -> None:
    """After the commit, push the sites' readers a fresh trust document."""

    async def publish() -> None:
        for site_id in site_ids:
            await trust.publish_site(runtime, site_id)

    if site_ids:
        after_commit(session, publish)


async def places_of(session: AsyncSession, key: Key) -> list[Place]:
    """Every entrance the key opens."""
    entrances = await EntranceRepository(session).list(
        TenantScope(partner_id=key.partner_id, site_ids=frozenset({key.site_id})), limit=1000
    )
    return [place for place in map(place_of, entrances) if covers(key, place)]


def place_of(entrance: Entrance) -> Place:
    return Place(entrance.site_id, entrance.building_id, entrance.unit_id, entrance.id)


def local_midnight(day: date, site: Site) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(site.time_zone))


class KeyService(CrudService[Key]):
    group = Group.KEYS
    noun = "key"
    repository_class = KeyRepository

    async def build(self, data: KeyCreate) -> Key:
        scope = self.principal.scope
        person = await PersonRepository(self.session).get(
            TenantScope(partner_id=scope.partner_id), data.person_id
        )
        if person is None:
            raise NotFound(f"person {data.person_id} not found")
        refuse_past_end(data.ends_at, self.runtime.clock.now())
        key = Key(
            person_id=person.id,
            kind=data.kind,
            name=data.name,
            starts_at=data.starts_at,
            ends_at=data.ends_at,
            schedule=data.schedule.model_dump() if data.schedule else None,
            max_uses=data.max_uses,
            uses_count=0,
            carrier=data.carrier,
            issued_by=self.principal.reference(),
        )
        await self._target(key, data)
        if key.partner_id != person.partner_id:
            raise NotFound(f"person {data.person_id} not found")
        self._check_kind(key)
        if key.kind is KeyKind.GUEST:
            key.pass_id = uuid.uuid4()  # the QR pass's credential id, stable for its life
        key.status = initial_status(key, self.runtime.clock.now())
        return key

    async def create(self, data: Any) -> Key:
        key = await super().create(data)
        await outbox.append(self.session, [key_message("key.issued", key)])
        await schedule.follow(self.session, self.runtime, [key])
        return key

    async def _target(self, key: Key, data: KeyCreate) -> None:
        scope = self.principal.scope
        if data.entrance_id is not None:
            entrance = await self.visible(
                EntranceRepository(self.session), data.entrance_id, "entrance"
            )
            key.target_kind, key.entrance_id = TargetKind.ENTRANCE, entrance.id
            key.building_id, key.unit_id = entrance.building_id, entrance.unit_id
            place = entrance
        elif data.unit_id is not None:
            place = await self.visible(UnitRepository(self.session), data.unit_id, "unit")
            key.target_kind, key.unit_id, key.building_id = (
                TargetKind.UNIT,
                place.id,
                place.building_id,
            )
        elif data.building_id is not None:
            place = await self.visible(
                BuildingRepository(self.session), data.building_id, "building"
            )
            key.target_kind, key.building_id = TargetKind.BUILDING, place.id
        else:
            assert data.site_id is not None
            place = await self.visible(SiteRepository(self.session), data.site_id, "site")
            key.target_kind = TargetKind.SITE
        key.site_id = place.id if key.target_kind is TargetKind.SITE else place.site_id
        key.partner_id = place.partner_id
        if not scope.allows(key.partner_id, key.site_id):
            raise NotFound("target not found")

    @staticmethod
    def _check_kind(key: Key) -> None:
        problems = []
        if key.kind in (KeyKind.RESIDENT, KeyKind.HOUSEHOLD) and key.target_kind is not (
            TargetKind.UNIT
        ):
            problems.append(
                FieldError(
                    ("body", "unit_id"), f"a {key.kind.value} key targets a unit", "unit_required"
                )
            )
        if key.kind is KeyKind.COURIER:
            if key.target_kind not in (TargetKind.BUILDING, TargetKind.ENTRANCE):
                problems.append(
                    FieldError(
                        ("body", "building_id"),
                        "a courier key targets a building or an entrance",
                        "building_required",
                    )
                )
            if not key.carrier:
                problems.append(FieldError(("body", "carrier"), "the carrier account", "missing"))
        if key.kind is KeyKind.GUEST and key.ends_at is None:
            problems.append(FieldError(("body", "ends_at"), "a guest key ends", "missing"))
        if problems:
            raise ValidationFailed("the key does not fit its kind", errors=problems)

    async def apply(self, obj: Key, changes: dict[str, Any]) -> None:
        if obj.status in (KeyStatus.REVOKED, KeyStatus.EXPIRED):
            raise ValidationFailed(f"a {obj.status.value} key cannot change")
        status = changes.pop("status", None)
        if "schedule" in changes and changes["schedule"] is not None:
            changes["schedule"] = dict(changes["schedule"])
        await super().apply(obj, changes)
        starts, ends = obj.starts_at, obj.ends_at
        if starts and ends and ends <= starts:
            raise ValidationFailed(
                "ends_at must be after starts_at",
                errors=[FieldError(("body", "ends_at"), "before starts_at", "date_order")],
            )
        now = self.runtime.clock.now()
        parent = (
            await KeyRepository(self.session).by_id(obj.parent_key_id)
            if obj.parent_key_id is not None
            else None
        )
        if parent is not None and changes.keys() & {"starts_at", "ends_at", "schedule"}:
            check_within_parent(obj, parent)  # a suspension or a new name is always fine
        if status == "suspended" and obj.status is not KeyStatus.SUSPENDED:
            obj.status = KeyStatus.SUSPENDED
            await outbox.append(self.session, [key_message("key.suspended", obj)])
            announce(self.session, self.runtime, {obj.site_id})
        elif status == "active" and obj.status is KeyStatus.SUSPENDED:
            if parent is not None and effective_status(parent, now) is KeyStatus.SUSPENDED:
                raise NotCoveredByParent("its parent key is suspended")
            obj.status, obj.suspended_with_parent = initial_status(obj, now), False
            await outbox.append(self.session, [key_message("key.resumed", obj)])
            announce(self.session, self.runtime, {obj.site_id})
        elif obj.status is not KeyStatus.SUSPENDED:
            obj.status = initial_status(obj, now)
        await schedule.follow(self.session, self.runtime, [obj])
        await follow_parent(self.session, self.runtime, obj)

    async def delete(self, object_id: UUID) -> None:
        """Revoke: the key stays, as evidence, with ``revoked_at``."""
        self.principal.require(self.group, Action.WRITE)
        key: Key = await self.visible(self.repository, object_id, self.noun)
        reason = (
            KeyReason.REVOKED_BY_PARTNER
            if self.principal.kind == "api_key"
            else KeyReason.REVOKED_BY_STAFF
        )
        await revoke(self.session, self.runtime, key, reason)
