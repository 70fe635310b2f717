"""SQL for devices, action attempts and device events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast
from uuid import UUID

from sqlalchemy import ColumnElement, Table, Uuid, bindparam, column, func, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from sesame.kit.db import json_text
from sesame.kit.repository import (
    CrudRepository,
    TenantScope,
    insert_new,
    prepared,
    scope_clauses,
    scope_parameters,
    scope_shape,
)
from sesame.models import (
    ActionAttempt,
    AttemptPhase,
    AttemptStatus,
    Device,
    DeviceEventRecord,
    DeviceKind,
    DeviceStatus,
    Entrance,
)


def _equal(model: Any, query: Any, names: tuple[str, ...]) -> list[ColumnElement[bool]]:
    return [
        getattr(model, n) == getattr(query, n) for n in names if getattr(query, n, None) is not None
    ]


class DeviceRepository(CrudRepository[Device]):
    model = Device

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        return _equal(
            Device, query, ("site_id", "kind", "entrance_id", "unit_id", "online", "status")
        )

    async def by_id(self, device_id: UUID) -> Device | None:
        return await self.session.get(Device, device_id)

    async def locked(self, device_id: UUID) -> Device | None:
        """The device row, locked for this transaction (serialises its command queue)."""
        statement = prepared(
            "device_locked",
            lambda: select(Device).where(Device.id == bindparam("device_id")).with_for_update(),
        )
        result = await self.session.execute(statement, {"device_id": device_id})
        return result.scalar_one_or_none()

    async def locked_with_queue(self, device_id: UUID) -> tuple[Device, int] | None:
        """The device row, locked, and how many unfinished attempts it has: one query
        where the command path would otherwise need two."""
        statement = prepared(
            "device_locked_with_queue",
            lambda: (
                select(Device, _unfinished(Device.id))
                .where(Device.id == bindparam("device_id"))
                .with_for_update()
            ),
        )
        row = (await self.session.execute(statement, {"device_id": device_id})).first()
        return None if row is None else (row[0], int(row[1]))

    async def locked_many(self, device_ids: Sequence[UUID]) -> Sequence[Device]:
        result = await self.session.execute(
            select(Device).where(Device.id.in_(device_ids)).order_by(Device.id).with_for_update()
        )
        return result.scalars().all()

    async def guarding(self, site_id: UUID) -> Sequence[Device]:
        """Active devices of a site bound to an entrance (the ones that decide offline)."""
        result = await self.session.execute(
            select(Device).where(
                Device.site_id == site_id,
                Device.entrance_id.is_not(None),
                Device.status == DeviceStatus.ACTIVE,
            )
        )
        return result.scalars().all()

    async def credential_hash(self, device_id: UUID) -> str | None:
        result = await self.session.execute(
            select(Device.credential_hash).where(
                Device.id == device_id, Device.status == DeviceStatus.ACTIVE
            )
        )
        return result.scalar_one_or_none()

    async def active_credentials(self) -> Sequence[tuple[UUID, str]]:
        result = await self.session.execute(
            select(Device.id, Device.credential_hash).where(
                Device.status == DeviceStatus.ACTIVE, Device.credential_hash.is_not(None)
            )
        )
        return [(row[0], str(row[1])) for row in result.all()]

    async def locked_in_scope(self, scope: TenantScope, device_id: UUID) -> Device | None:
        """A device the caller may see, locked for this transaction."""
        result = await self.session.execute(
            self.scoped(scope).where(Device.id == device_id).with_for_update()
        )
        device: Device | None = result.scalar_one_or_none()
        return device

    async def opener_of(
        self, scope: TenantScope, entrance_id: UUID, kinds: Sequence[DeviceKind]
    ) -> tuple[Device, int] | None:
        """The device that opens an entrance the caller may see (an online one first),
        locked for this transaction, and how many unfinished attempts it has; one query
        for what the open path needs."""
        kinds = tuple(kinds)
        statement = prepared(
            ("device_opener_of", *scope_shape(scope), kinds),
            lambda: (
                select(Device, _unfinished(Device.id))
                .join(Entrance, Entrance.id == Device.entrance_id)
                .where(
                    Entrance.id == bindparam("entrance_id"),
                    *scope_clauses(Entrance, scope),
                    Device.kind.in_(kinds),
                    Device.status == DeviceStatus.ACTIVE,
                )
                .order_by(Device.online.desc(), Device.id)
                .limit(1)
                .with_for_update(of=Device)
            ),
        )
        result = await self.session.execute(
            statement, scope_parameters(scope, entrance_id=entrance_id)
        )
        row = result.first()
        return None if row is None else (row[0], int(row[1]))

    async def touch(self, device_ids: Sequence[UUID], when: datetime) -> None:
        if device_ids:
            await self.session.execute(
                update(Device).where(Device.id.in_(device_ids)).values(last_seen_at=when)
            )

    async def offline_among(self, device_ids: Sequence[UUID]) -> Sequence[Device]:
        result = await self.session.execute(
            select(Device)
            .where(
                Device.id.in_(device_ids),
                Device.online.is_(False),
                Device.status == DeviceStatus.ACTIVE,
                Device.credential_hash.is_not(None),
            )
            .with_for_update()
        )
        return result.scalars().all()

    async def silent_since(self, cutoff: datetime) -> Sequence[Device]:
        result = await self.session.execute(
            select(Device).where(*_silent(cutoff)).with_for_update(skip_locked=True)
        )
        return result.scalars().all()

    async def silent_ids_since(self, cutoff: datetime) -> Sequence[UUID]:
        """The ids ``silent_since`` would lock, without a lock (a read transaction)."""
        result = await self.session.execute(select(Device.id).where(*_silent(cutoff)))
        return result.scalars().all()

    async def routing(self, device_ids: Sequence[UUID]) -> dict[UUID, tuple[UUID, UUID, bool]]:
        """``device_id -> (partner_id, site_id, active)`` for event ingestion."""
        result = await self.session.execute(
            select(Device.id, Device.partner_id, Device.site_id, Device.status).where(
                Device.id.in_(device_ids)
            )
        )
        return {row[0]: (row[1], row[2], row[3] is DeviceStatus.ACTIVE) for row in result.all()}


def _silent(cutoff: datetime) -> tuple[Any, ...]:
    """Online devices not heard from since ``cutoff``, as conditions."""
    return (
        Device.online.is_(True),
        (Device.last_seen_at < cutoff) | Device.last_seen_at.is_(None),
    )


def _unfinished(device_id: Any) -> Any:
    """How many attempts of a device are queued or sent, as a column."""
    return (
        select(func.count())
        .select_from(ActionAttempt)
        .where(
            ActionAttempt.device_id == device_id,
            ActionAttempt.phase.in_((AttemptPhase.QUEUED, AttemptPhase.SENT)),
        )
        .scalar_subquery()
    )


class AttemptRepository(CrudRepository[ActionAttempt]):
    model = ActionAttempt

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        return _equal(ActionAttempt, query, ("device_id", "status", "action"))

    async def by_id(self, attempt_id: UUID) -> ActionAttempt | None:
        statement = prepared(
            "attempt_by_id",
            lambda: (
                select(ActionAttempt)
                .where(ActionAttempt.id == bindparam("attempt_id"))
                .execution_options(populate_existing=True)
            ),
        )
        result = await self.session.execute(statement, {"attempt_id": attempt_id})
        return result.scalar_one_or_none()

    async def insert(self, attempt: ActionAttempt) -> None:
        """Write a new attempt now, without the unit of work (``insert_new``)."""
        await insert_new(self.session, [attempt])

    async def pending_for(self, device_id: UUID, limit: int = 50) -> Sequence[ActionAttempt]:
        """The device's unfinished attempts, oldest first."""
        statement = prepared(
            ("attempts_pending_for", limit),
            lambda: (
                select(ActionAttempt)
                .where(
                    ActionAttempt.device_id == bindparam("device_id"),
                    ActionAttempt.phase.in_((AttemptPhase.QUEUED, AttemptPhase.SENT)),
                )
                .order_by(ActionAttempt.created_at, ActionAttempt.id)
                .limit(limit)
            ),
        )
        result = await self.session.execute(statement, {"device_id": device_id})
        return result.scalars().all()

    async def issued_to(self, attempt_id: UUID, device_id: UUID) -> bool:
        """Whether the platform ever made this attempt for this device."""
        statement = prepared(
            "attempt_issued_to",
            lambda: select(ActionAttempt.id).where(
                ActionAttempt.id == bindparam("attempt_id"),
                ActionAttempt.device_id == bindparam("device_id"),
            ),
        )
        found = await self.session.execute(
            statement, {"attempt_id": attempt_id, "device_id": device_id}
        )
        return found.first() is not None

    async def finish(
        self,
        attempt_id: UUID,
        *,
        device_id: UUID | None = None,
        only_phase: AttemptPhase | None = None,
        **values: Any,
    ) -> ActionAttempt | None:
        """Move a pending attempt to its final status; None if it was not pending (any more)."""
        names = tuple(sorted(values))

        def build() -> Any:
            conditions = [
                ActionAttempt.id == bindparam("where_id"),
                ActionAttempt.status == AttemptStatus.PENDING,
            ]
            if device_id is not None:
                conditions.append(ActionAttempt.device_id == bindparam("where_device_id"))
            if only_phase is not None:
                conditions.append(ActionAttempt.phase == bindparam("where_phase"))
            return (
                update(ActionAttempt)
                .where(*conditions)
                .values(phase=AttemptPhase.DONE, **{n: bindparam(f"new_{n}") for n in names})
                .returning(ActionAttempt)
                # Refresh an instance this session already holds, or it keeps stale values.
                .execution_options(synchronize_session=False, populate_existing=True)
            )

        statement = prepared(
            ("attempt_finish", device_id is not None, only_phase is not None, names), build
        )
        # Named unlike any column: an UPDATE takes a parameter named after one as a SET.
        parameters: dict[str, Any] = {f"new_{n}": values[n] for n in names}
        parameters["where_id"] = attempt_id
        if device_id is not None:
            parameters["where_device_id"] = device_id
        if only_phase is not None:
            parameters["where_phase"] = only_phase
        result = await self.session.execute(statement, parameters)
        return result.scalar_one_or_none()

    async def overdue(
        self, phase: AttemptPhase, cutoff: datetime, limit: int = 500
    ) -> Sequence[tuple[UUID, UUID]]:
        """``(attempt_id, device_id)`` of pending attempts in ``phase`` past ``cutoff``."""
        result = await self.session.execute(
            select(ActionAttempt.id, ActionAttempt.device_id)
            .where(ActionAttempt.phase == phase, ActionAttempt.expires_at <= cutoff)
            .order_by(ActionAttempt.expires_at)
            .limit(limit)
        )
        return [(row[0], row[1]) for row in result.all()]

    async def devices_with_queue(self, limit: int = 1000) -> Sequence[UUID]:
        result = await self.session.execute(
            select(ActionAttempt.device_id)
            .where(ActionAttempt.phase == AttemptPhase.QUEUED)
            .distinct()
            .limit(limit)
        )
        return result.scalars().all()


class EventRepository(CrudRepository[DeviceEventRecord]):
    model = DeviceEventRecord

    def filter_clauses(self, query: Any) -> list[ColumnElement[bool]]:
        clauses = _equal(DeviceEventRecord, query, ("device_id", "site_id", "type"))
        if query.since is not None:
            clauses.append(DeviceEventRecord.occurred_at >= query.since)
        return clauses

    async def insert_new(self, rows: list[dict[str, Any]]) -> list[StoredEvent]:
        """Insert events; those already stored (same device and event id) are skipped.
        Returns the rows that were new.

        One statement per batch: on PostgreSQL an ``INSERT … SELECT FROM unnest(arrays)``
        (a column per parameter, encoded by the driver, instead of a parameter per value);
        elsewhere a multi-row insert. Only the new rows' ids come back: the rest is known."""
        if not rows:
            return []
        if self.session.get_bind().dialect.name == "postgresql":
            received_at = rows[0]["received_at"]
            if any(row["received_at"] != received_at for row in rows):
                raise ValueError("a batch of events is received at one instant")
            parameters: dict[str, Any] = {
                name: [row[name] for row in rows] for name in _EVENT_ARRAY_COLUMNS
            }
            parameters["data"] = [json_text(row["data"]) for row in rows]
            parameters["received_at"] = received_at
            result = await self.session.execute(_INSERT_EVENTS_FROM_ARRAYS, parameters)
        else:
            statement = (
                sqlite_insert(_EVENTS)
                .on_conflict_do_nothing(index_elements=["device_id", "event_id"])
                .returning(_EVENTS.c.id)
            )
            connection = await self.session.connection()
            result = await connection.execute(statement, rows)
        new = set(result.scalars())
        return [_stored(row) for row in rows if row["id"] in new]


class StoredEvent(NamedTuple):
    """An event as it was stored: what the device hooks and the outbox are told."""

    id: UUID
    partner_id: UUID
    site_id: UUID
    device_id: UUID
    event_id: UUID
    type: str
    occurred_at: datetime
    data: dict[str, Any]


def _stored(row: dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        row["id"],
        row["partner_id"],
        row["site_id"],
        row["device_id"],
        row["event_id"],
        row["type"],
        row["occurred_at"],
        row["data"],
    )


_EVENTS = cast(Table, DeviceEventRecord.__table__)
_EVENT_ARRAY_COLUMNS = (
    "id",
    "partner_id",
    "site_id",
    "device_id",
    "event_id",
    "type",
    "occurred_at",
)
_INSERT_EVENTS_FROM_ARRAYS = text(
    """
    INSERT INTO device_events
        (id, partner_id, site_id, device_id, event_id, type, occurred_at, received_at, data)
    SELECT v.id, v.partner_id, v.site_id, v.device_id, v.event_id, v.type, v.occurred_at,
        :received_at, CAST(v.data AS json)
    FROM unnest(
        CAST(:id AS uuid[]), CAST(:partner_id AS uuid[]), CAST(:site_id AS uuid[]),
        CAST(:device_id AS uuid[]), CAST(:event_id AS uuid[]), CAST(:type AS varchar[]),
        CAST(:occurred_at AS timestamptz[]), CAST(:data AS text[])
    ) AS v(id, partner_id, site_id, device_id, event_id, type, occurred_at, data)
    ON CONFLICT (device_id, event_id) DO NOTHING
    RETURNING id
    """
).columns(column("id", Uuid()))
