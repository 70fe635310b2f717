"""SQL for keys, signing keys, PIN codes and the access log."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID

from sqlalchemy import ColumnElement, Table, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sesame.kit.repository import CrudRepository, insert_new, prepared
from sesame.models import (
    AccessEvent,
    Key,
    KeyKind,
    KeyStatus,
    PinCode,
    PinStatus,
    Site,
    SiteSigningKey,
)

LIVE = (KeyStatus.SCHEDULED, KeyStatus.ACTIVE)
_KEYS = cast(Table, Key.__table__)
MAX_LINEAGE = 8  # a resident key, a household member's share, a guest pass: far fewer


def _equal(model: Any, query: Any, names: tuple[str, ...]) -> list[ColumnElement[bool]]:
    return [
        getattr(model, n) == getattr(query, n) for n in names if getattr(query, n, None) is not None
    ]


class KeyRepository(CrudRepository[Key]):
    model = Key

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        return _equal(
            Key,
            query,
            (
                "site_id",
                "person_id",
                "kind",
                "status",
                "unit_id",
                "building_id",
                "entrance_id",
                "carrier",
            ),
        )

    async def by_id(self, key_id: UUID, *, lock: bool = False) -> Key | None:
        """``lock``: hold the key's row until the transaction ends, so that a decision
        taken on it (share, issue) cannot interleave with its revocation."""
        return await self.session.get(Key, key_id, with_for_update=lock or None)

    async def by_ids(self, key_ids: Iterable[UUID]) -> dict[UUID, Key]:
        result = await self.session.execute(select(Key).where(Key.id.in_(list(key_ids))))
        return {key.id: key for key in result.scalars()}

    async def of_people(
        self, person_ids: Sequence[UUID], *, site_id: UUID | None = None, lock: bool = False
    ) -> Sequence[Key]:
        """Keys held by these people (newest first), for decisions and for /v1/me."""
        if not person_ids:
            return []

        def build() -> Any:
            statement = select(Key).where(Key.person_id.in_(bindparam("person_ids")))
            if site_id is not None:
                statement = statement.where(Key.site_id == bindparam("site_id"))
            if lock:
                statement = statement.with_for_update()
            return statement.order_by(Key.id.desc())

        statement = prepared(("keys_of_people", site_id is not None, lock), build)
        parameters: dict[str, Any] = {"person_ids": list(person_ids)}
        if site_id is not None:
            parameters["site_id"] = site_id
        result = await self.session.execute(statement, parameters)
        return result.scalars().all()

    async def issued_by_people(self, person_ids: Sequence[UUID]) -> Sequence[Key]:
        if not person_ids:
            return []
        result = await self.session.execute(
            select(Key).where(Key.issued_by_person_id.in_(person_ids)).order_by(Key.id.desc())
        )
        return result.scalars().all()

    async def spend_use(self, key_id: UUID) -> int | None:
        """Count one use, atomically; None if the key has no use left or was revoked or
        suspended meanwhile (the update waits for a concurrent revocation to commit and
        then sees it)."""
        statement = prepared(
            "key_spend_use",
            lambda: (
                update(_KEYS)
                .where(
                    _KEYS.c.id == bindparam("key_id"),
                    _KEYS.c.status.not_in([KeyStatus.REVOKED, KeyStatus.SUSPENDED]),
                    or_(_KEYS.c.max_uses.is_(None), _KEYS.c.uses_count < _KEYS.c.max_uses),
                )
                .values(uses_count=_KEYS.c.uses_count + 1)
                .returning(_KEYS.c.uses_count)
            ),
        )
        # Core, not the ORM's UPDATE, which computes its cache key again on every call.
        result = await self.session.execute(statement, {"key_id": key_id})
        uses: int | None = result.scalar_one_or_none()
        return uses

    async def live_for_person_at_unit(self, person_id: UUID, unit_id: UUID) -> Sequence[Key]:
        result = await self.session.execute(
            select(Key).where(
                Key.person_id == person_id,
                Key.unit_id == unit_id,
                Key.status.in_((*LIVE, KeyStatus.SUSPENDED)),
            )
        )
        return result.scalars().all()

    async def for_household(self, household_id: UUID) -> Key | None:
        result = await self.session.execute(
            select(Key)
            .where(Key.household_id == household_id, Key.kind == KeyKind.RESIDENT)
            .order_by(Key.id.desc())
            .limit(1)
        )
        return result.scalars().first()

    async def shared_count(self, unit_id: UUID) -> int:
        result = await self.session.execute(
            select(func.count())
            .select_from(Key)
            .where(Key.unit_id == unit_id, Key.kind == KeyKind.HOUSEHOLD, Key.status.in_(LIVE))
        )
        return int(result.scalar_one())

    async def children(self, parent_id: UUID) -> Sequence[Key]:
        """Keys given from this one that are not over yet: live or suspended."""
        result = await self.session.execute(
            select(Key)
            .where(
                Key.parent_key_id == parent_id,
                Key.status.in_((*LIVE, KeyStatus.SUSPENDED)),
            )
            .order_by(Key.id)
        )
        return result.scalars().all()

    async def lineage(self, key: Key) -> list[Key]:
        """The key, then the key it was given from, and so on up to one issued directly."""
        chain = [key]
        while chain[-1].parent_key_id is not None and len(chain) < MAX_LINEAGE:
            parent = await self.session.get(Key, chain[-1].parent_key_id)
            if parent is None or parent in chain:
                break
            chain.append(parent)
        return chain

    async def lineages(self, keys: Sequence[Key]) -> dict[UUID, list[Key]]:
        return {key.id: await self.lineage(key) for key in keys}

    async def blocked(
        self,
        site_id: UUID,
        now: datetime,
        *,
        mobile_lifetime: timedelta,
        limit: int,
        clock_grace: timedelta = timedelta(0),
    ) -> Sequence[UUID]:
        """Keys a reader must refuse because some credential issued for them may still be
        in date: suspended, or revoked or used up while one could be — a phone's until
        ``mobile_lifetime`` after the change, a guest pass until the key's end; never past
        the key's end (plus ``clock_grace``, for readers whose clocks lag), which bounds
        every credential. Most recently changed first, at most ``limit``.

        Whatever their number, every such key is here: none falls off for newer ones."""
        changed = func.coalesce(Key.revoked_at, Key.updated_at)
        in_date = or_(Key.ends_at.is_(None), Key.ends_at > now - clock_grace)
        may_hold = or_(changed > now - mobile_lifetime, Key.pass_id.is_not(None))
        result = await self.session.execute(
            select(Key.id)
            .where(
                Key.site_id == site_id,
                or_(
                    Key.status == KeyStatus.SUSPENDED,
                    Key.status.in_((KeyStatus.REVOKED, KeyStatus.EXPIRED)) & in_date & may_hold,
                ),
            )
            .order_by(changed.desc(), Key.id)
            .limit(limit)
        )
        return result.scalars().all()

    async def due(self, now: datetime, limit: int = 500) -> Sequence[Key]:
        """Live keys whose stored status is behind time: to activate or to expire."""
        result = await self.session.execute(
            select(Key)
            .where(
                Key.status.in_(LIVE),
                or_(
                    (Key.status == KeyStatus.SCHEDULED)
                    & (or_(Key.starts_at.is_(None), Key.starts_at <= now)),
                    Key.ends_at <= now,
                    (Key.max_uses.is_not(None)) & (Key.uses_count >= Key.max_uses),
                ),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return result.scalars().all()


class SigningKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def active(self, site_id: UUID) -> SiteSigningKey | None:
        result = await self.session.execute(
            select(SiteSigningKey)
            .where(SiteSigningKey.site_id == site_id, SiteSigningKey.active.is_(True))
            .order_by(SiteSigningKey.created_at.desc())
            .limit(1)
        )
        return result.scalars().first()

    async def published(self, site_id: UUID) -> Sequence[SiteSigningKey]:
        """Keys readers must still trust: the active one and those not yet retired."""
        result = await self.session.execute(
            select(SiteSigningKey)
            .where(SiteSigningKey.site_id == site_id, SiteSigningKey.retired_at.is_(None))
            .order_by(SiteSigningKey.created_at)
        )
        return result.scalars().all()

    async def add(self, key: SiteSigningKey) -> None:
        self.session.add(key)
        await self.session.flush()

    async def deactivate_all(self, site_id: UUID) -> None:
        await self.session.execute(
            update(SiteSigningKey)
            .where(SiteSigningKey.site_id == site_id)
            .values(active=False)
            .execution_options(synchronize_session=False)
        )

    async def retire_older_than(self, site_id: UUID, cutoff: datetime, when: datetime) -> None:
        await self.session.execute(
            update(SiteSigningKey)
            .where(
                SiteSigningKey.site_id == site_id,
                SiteSigningKey.active.is_(False),
                SiteSigningKey.retired_at.is_(None),
                SiteSigningKey.created_at < cutoff,
            )
            .values(retired_at=when)
            .execution_options(synchronize_session=False)
        )


class AccessEventRepository(CrudRepository[AccessEvent]):
    model = AccessEvent

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        clauses = _equal(
            AccessEvent,
            query,
            ("site_id", "entrance_id", "key_id", "person_id", "device_id", "result", "method"),
        )
        if getattr(query, "since", None) is not None:
            clauses.append(AccessEvent.at >= query.since)
        return clauses

    async def add_many(self, events: Sequence[AccessEvent]) -> None:
        """Write new entries now, without the unit of work (``insert_new``): the log is
        written on every open, and never changed after."""
        await insert_new(self.session, events)

    async def visible_to_resident(
        self,
        person_ids: Sequence[UUID],
        unit_ids: Sequence[UUID],
        key_ids: Sequence[UUID],
        *,
        limit: int,
        after: UUID | None,
    ) -> Sequence[AccessEvent]:
        """A resident's view: events of their keys, and at their households' doors."""
        from sesame.models import Entrance

        conditions = [AccessEvent.person_id.in_(person_ids)] if person_ids else []
        if key_ids:
            conditions.append(AccessEvent.key_id.in_(key_ids))
        if unit_ids:
            unit_doors = select(Entrance.id).where(Entrance.unit_id.in_(unit_ids))
            conditions.append(AccessEvent.entrance_id.in_(unit_doors))
        if not conditions:
            return []
        statement = select(AccessEvent).where(or_(*conditions))
        if after is not None:
            statement = statement.where(AccessEvent.id > after)
        result = await self.session.execute(statement.order_by(AccessEvent.id).limit(limit + 1))
        return result.scalars().all()


class PinCodeRepository(CrudRepository[PinCode]):
    model = PinCode

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        return _equal(PinCode, query, ("site_id", "device_id", "key_id", "person_id", "status"))

    async def by_id(self, pin_id: UUID) -> PinCode | None:
        return await self.session.get(PinCode, pin_id)

    async def on_device(self, device_id: UUID) -> Sequence[PinCode]:
        """Every code that is, or may be, on the lock (not the fully removed ones)."""
        result = await self.session.execute(
            select(PinCode)
            .where(PinCode.device_id == device_id, PinCode.status != PinStatus.REMOVED)
            .order_by(PinCode.created_at, PinCode.id)
        )
        return result.scalars().all()

    async def by_attempt(self, attempt_id: UUID) -> PinCode | None:
        result = await self.session.execute(select(PinCode).where(PinCode.attempt_id == attempt_id))
        return result.scalar_one_or_none()

    async def devices_of_keys(self, key_ids: Sequence[UUID]) -> Sequence[UUID]:
        """Locks holding, or due to hold, codes tied to these keys."""
        result = await self.session.execute(
            select(PinCode.device_id)
            .where(PinCode.key_id.in_(key_ids), PinCode.status != PinStatus.REMOVED)
            .distinct()
        )
        return result.scalars().all()

    async def needing_work(self, now: datetime, lead: datetime, limit: int = 200) -> Sequence[UUID]:
        """Locks with a code not tied to a key to program (due within the lead) or to
        take off (codes tied to keys: ``tied_to_keys``)."""
        result = await self.session.execute(
            select(PinCode.device_id)
            .where(
                PinCode.attempt_id.is_(None),
                PinCode.key_id.is_(None),
                or_(
                    PinCode.wanted.is_(True)
                    & PinCode.status.in_((PinStatus.UNSET, PinStatus.UNKNOWN))
                    & or_(PinCode.starts_at.is_(None), PinCode.starts_at <= lead)
                    & or_(PinCode.ends_at.is_(None), PinCode.ends_at > now)
                    & PinCode.error.is_(None),
                    PinCode.status.in_((PinStatus.SET, PinStatus.REMOVING))
                    & or_(PinCode.wanted.is_(False), PinCode.ends_at <= now),
                ),
            )
            .distinct()
            .limit(limit)
        )
        return result.scalars().all()

    async def tied_to_keys(self, limit: int = 5000) -> Sequence[tuple[PinCode, Key, str]]:
        """Codes tied to keys that may need work, with their key and site's time zone,
        for the caller to judge (a key's schedule is not SQL)."""
        result = await self.session.execute(
            select(PinCode, Key, Site.time_zone)
            .join(Key, Key.id == PinCode.key_id)
            .join(Site, Site.id == PinCode.site_id)
            .where(
                PinCode.attempt_id.is_(None),
                PinCode.status.in_(
                    (PinStatus.UNSET, PinStatus.UNKNOWN, PinStatus.SET, PinStatus.REMOVING)
                ),
            )
            .limit(limit)
        )
        return [(pin, key, zone) for pin, key, zone in result.all()]
