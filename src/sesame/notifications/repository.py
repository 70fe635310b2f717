"""SQL for notifications: audiences, destinations, preferences, deliveries, campaigns."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast
from uuid import UUID

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Enum,
    Integer,
    String,
    Table,
    TextClause,
    Uuid,
    and_,
    bindparam,
    func,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.sql.schema import CallableColumnDefault, ScalarElementColumnDefault

from sesame.kit.db import UTCDateTime, dialect_insert, json_text
from sesame.kit.repository import CrudRepository, SessionRepository
from sesame.ledger.entries import TOPICS as LEDGER_TOPICS
from sesame.models import (
    Alert,
    Campaign,
    Delivery,
    DeliveryStatus,
    Destination,
    Device,
    DeviceOutage,
    Entrance,
    Household,
    Key,
    LedgerState,
    NotificationState,
    OutboxMessage,
    Person,
    Preference,
    Site,
    StaffAccount,
    StaffRole,
    StaffSiteScope,
    Unit,
    WebhookEndpoint,
)
from sesame.people.repository import active_on

STATE_ROW = 1


@dataclass(frozen=True)
class Recipient:
    """A person or a staff member to notify."""

    kind: str  # "person" | "staff"
    id: UUID
    locale: str
    partner_id: UUID | None
    email: str | None = None  # staff: the account's address, used when they gave no other


class NotificationRepository(SessionRepository):
    async def cursor(self) -> int:
        """The stored outbox cursor, read without a lock (0 before the first step)."""
        found = await self.session.execute(
            select(NotificationState.outbox_cursor).where(NotificationState.id == STATE_ROW)
        )
        return found.scalar() or 0

    async def state(self) -> NotificationState:
        state = await self.session.get(NotificationState, STATE_ROW, with_for_update=True)
        if state is None:
            state = NotificationState(id=STATE_ROW, outbox_cursor=0)
            self.session.add(state)
            await self.session.flush()
        return state

    # -- audiences -------------------------------------------------------------------------

    async def people(self, person_ids: Iterable[UUID]) -> list[Recipient]:
        ids = list(dict.fromkeys(person_ids))
        if not ids:
            return []
        result = await self.session.execute(
            select(Person.id, Person.locale, Person.partner_id).where(Person.id.in_(ids))
        )
        return [Recipient("person", pid, locale, partner) for pid, locale, partner in result]

    async def household_of_unit(self, unit_id: UUID, today: date) -> list[Recipient]:
        result = await self.session.execute(
            select(Household.person_id).where(Household.unit_id == unit_id, active_on(today))
        )
        return await self.people(result.scalars())

    async def site_managers(self, partner_id: UUID, site_id: UUID) -> list[Recipient]:
        """The site's managers; its partner's administrators when it has none."""
        managers = await self.session.execute(
            select(StaffAccount.id, StaffAccount.email)
            .join(StaffSiteScope, StaffSiteScope.staff_id == StaffAccount.id)
            .where(
                StaffSiteScope.site_id == site_id,
                StaffAccount.role == StaffRole.SITE_MANAGER,
                StaffAccount.is_active.is_(True),
            )
        )
        rows = managers.all()
        if not rows:
            admins = await self.session.execute(
                select(StaffAccount.id, StaffAccount.email).where(
                    StaffAccount.partner_id == partner_id,
                    StaffAccount.role == StaffRole.PARTNER_ADMIN,
                    StaffAccount.is_active.is_(True),
                )
            )
            rows = admins.all()
        return [Recipient("staff", sid, "", partner_id, email) for sid, email in rows]

    async def platform_admins(self) -> list[Recipient]:
        result = await self.session.execute(
            select(StaffAccount.id, StaffAccount.email).where(
                StaffAccount.role == StaffRole.PLATFORM_ADMIN, StaffAccount.is_active.is_(True)
            )
        )
        return [Recipient("staff", sid, "", None, email) for sid, email in result]

    async def place(self, device_id: UUID) -> dict[str, Any] | None:
        """A device's name, its site's name and zone, and the unit its door belongs to."""
        result = await self.session.execute(
            select(
                Device.name,
                Device.unit_id,
                Entrance.unit_id,
                Entrance.name,
                Site.name,
                Site.time_zone,
                Unit.name,
            )
            .join(Site, Site.id == Device.site_id)
            .outerjoin(Entrance, Entrance.id == Device.entrance_id)
            .outerjoin(Unit, Unit.id == func.coalesce(Device.unit_id, Entrance.unit_id))
            .where(Device.id == device_id)
        )
        row = result.first()
        if row is None:
            return None
        device, device_unit, entrance_unit, entrance, site, zone, unit = row
        return {
            "device": device,
            "unit_id": device_unit or entrance_unit,
            "place": unit or entrance or device,
            "site": site,
            "time_zone": zone,
        }

    async def key(self, key_id: UUID) -> Key | None:
        return await self.session.get(Key, key_id)

    async def site_name(self, site_id: UUID) -> str:
        return str(
            (await self.session.execute(select(Site.name).where(Site.id == site_id))).scalar() or ""
        )

    # -- destinations and preferences ------------------------------------------------------

    async def destinations_of(self, recipients: Sequence[Recipient]) -> dict[UUID, list[Any]]:
        people = [r.id for r in recipients if r.kind == "person"]
        staff = [r.id for r in recipients if r.kind == "staff"]
        if not people and not staff:
            return {}
        result = await self.session.execute(
            select(Destination.id, Destination.kind, Destination.person_id, Destination.staff_id)
            .where(
                Destination.active.is_(True),
                or_(Destination.person_id.in_(people), Destination.staff_id.in_(staff)),
            )
            .order_by(Destination.created_at)
        )
        found: dict[UUID, list[Any]] = {}
        for row in result:
            found.setdefault(row.person_id or row.staff_id, []).append(row)
        return found

    async def preferences_of(
        self, recipients: Sequence[Recipient], category: str
    ) -> dict[UUID, Preference]:
        people = [r.id for r in recipients if r.kind == "person"]
        staff = [r.id for r in recipients if r.kind == "staff"]
        if not people and not staff:
            return {}
        result = await self.session.execute(
            select(Preference).where(
                Preference.category == category,
                or_(Preference.person_id.in_(people), Preference.staff_id.in_(staff)),
            )
        )
        return {p.person_id or p.staff_id: p for p in result.scalars()}  # type: ignore[misc]

    async def webhook_endpoints(self, partner_id: UUID | None) -> Sequence[WebhookEndpoint]:
        owner = (
            WebhookEndpoint.partner_id.is_(None)
            if partner_id is None
            else WebhookEndpoint.partner_id == partner_id
        )
        result = await self.session.execute(
            select(WebhookEndpoint).where(owner, WebhookEndpoint.active.is_(True))
        )
        return result.scalars().all()

    async def destination(self, kind: str, digest: str) -> Destination | None:
        result = await self.session.execute(
            select(Destination).where(
                Destination.kind == kind, Destination.address_digest == digest
            )
        )
        return result.scalar_one_or_none()

    async def destinations_with(self, kind: Any, digest: str) -> Sequence[Destination]:
        result = await self.session.execute(
            select(Destination).where(
                Destination.kind == kind, Destination.address_digest == digest
            )
        )
        return result.scalars().all()

    async def owned_destination(
        self, owner: dict[str, Any], kind: Any, digest: str
    ) -> Destination | None:
        result = await self.session.execute(
            select(Destination).where(
                Destination.kind == kind,
                Destination.address_digest == digest,
                *(getattr(Destination, name) == value for name, value in owner.items() if value),
            )
        )
        return result.scalars().first()

    async def owned(self, owners: list[dict[str, Any]]) -> Sequence[Destination]:
        people = [o["person_id"] for o in owners if o["person_id"]]
        staff = [o["staff_id"] for o in owners if o["staff_id"]]
        result = await self.session.execute(
            select(Destination)
            .where(or_(Destination.person_id.in_(people), Destination.staff_id.in_(staff)))
            .order_by(Destination.created_at, Destination.id)
        )
        return result.scalars().all()

    async def preferences(self, owners: list[dict[str, Any]]) -> Sequence[Preference]:
        people = [o["person_id"] for o in owners if o["person_id"]]
        staff = [o["staff_id"] for o in owners if o["staff_id"]]
        result = await self.session.execute(
            select(Preference).where(
                or_(Preference.person_id.in_(people), Preference.staff_id.in_(staff))
            )
        )
        return result.scalars().all()

    async def partner_of_person(self, person_id: UUID) -> UUID | None:
        result = await self.session.execute(select(Person.partner_id).where(Person.id == person_id))
        return result.scalar()

    async def locale_of(self, person_id: UUID | None) -> str:
        """A person's locale; staff (None) have none and get the default language."""
        if person_id is None:
            return ""
        result = await self.session.execute(select(Person.locale).where(Person.id == person_id))
        return str(result.scalar() or "")

    async def install_destination(self, person_id: UUID, install_id: str) -> Destination | None:
        result = await self.session.execute(
            select(Destination).where(
                Destination.person_id == person_id, Destination.install_id == install_id
            )
        )
        return result.scalars().first()

    # -- deliveries ------------------------------------------------------------------------

    async def add_deliveries(self, rows: list[dict[str, Any]]) -> int:
        """Insert deliveries; those already there (same transaction id) are left alone.
        On PostgreSQL one statement over arrays of values (a campaign page is a thousand
        rows: one execution, not a thousand); elsewhere one insert per row."""
        if not rows:
            return 0
        if self.is_postgres:
            statement, values = _insert_from_arrays(rows)
            await self.session.execute(statement, values)
            return len(rows)
        insert = dialect_insert(self.session.get_bind().dialect)
        table = cast(Table, Delivery.__table__)  # Core: no ORM bookkeeping per row
        statement = insert(table).on_conflict_do_nothing(index_elements=["transaction_id"])
        await self.session.execute(statement, rows)
        return len(rows)

    async def claim(self, now: datetime, lease_until: datetime, limit: int) -> list[Any]:
        """Due deliveries, leased to the caller: ``next_attempt_at`` moves to the lease's
        end, so a sender that dies leaves them due again then, and nobody else takes them
        meanwhile. With what sending needs: the address, keys, secrets. On PostgreSQL one
        statement (``FOR UPDATE SKIP LOCKED`` in a CTE); on SQLite, whose writers take
        turns, three."""
        values = {"now": now, "lease_until": lease_until, "limit": limit}
        if self.is_postgres:
            result = await self.session.execute(_claim_statement(), values)
            return list(result.all())
        deliveries = cast(Table, Delivery.__table__)
        d = deliveries.c
        due = (
            select(d.id)
            .where(d.status == DeliveryStatus.QUEUED.value, d.next_attempt_at <= now)
            .order_by(d.next_attempt_at)
            .limit(limit)
        )
        lease = update(deliveries).values(
            next_attempt_at=lease_until, leased_until=lease_until, attempts=d.attempts + 1
        )
        ids = list((await self.session.execute(due)).scalars())
        if not ids:
            return []
        await self.session.execute(lease.where(d.id.in_(ids)))
        result = await self.session.execute(_with_destinations(deliveries, d).where(d.id.in_(ids)))
        return list(result.all())

    async def record(self, outcomes: list[dict[str, Any]]) -> None:
        """Write each delivery's outcome, if the caller still holds its lease: on
        PostgreSQL one statement over arrays of outcomes, elsewhere one per row."""
        if not outcomes:
            return
        if self.is_postgres:
            columns = {name: [o[name] for o in outcomes] for name in OUTCOME_COLUMNS}
            await self.session.execute(
                RECORD_FROM_ARRAYS,
                {
                    **columns,
                    "lease": outcomes[0]["b_lease"],
                    "updated_at": outcomes[0]["updated_at"],
                },
            )
            return
        deliveries = cast(Table, Delivery.__table__)
        table = deliveries.c
        statement = (
            update(deliveries)
            .where(and_(table.id == _param("b_id"), table.leased_until == _param("b_lease")))
            .values(
                status=_param("status"),
                next_attempt_at=_param("next_attempt_at"),
                leased_until=None,
                error_code=_param("error_code"),
                error=_param("error"),
                provider_id=_param("provider_id"),
                sent_at=_param("sent_at"),
                finished_at=_param("finished_at"),
                updated_at=_param("updated_at"),
            )
        )
        await self.session.execute(statement, outcomes)

    async def deactivate(self, destination_ids: Sequence[UUID], reason: str, now: datetime) -> None:
        if destination_ids:
            await self.session.execute(
                update(Destination)
                .where(Destination.id.in_(destination_ids), Destination.active.is_(True))
                .values(active=False, deactivated_at=now, deactivated_reason=reason)
                .execution_options(synchronize_session=False)
            )

    async def counts_by_status(self, **equals: Any) -> dict[str, int]:
        statement = select(Delivery.status, func.count()).group_by(Delivery.status)
        for name, value in equals.items():
            statement = statement.where(getattr(Delivery, name) == value)
        result = await self.session.execute(statement)
        return {str(status): int(count) for status, count in result.all()}

    # -- campaigns -------------------------------------------------------------------------

    async def residents_page(
        self, campaign: Campaign, today: date, after: UUID | None, limit: int
    ) -> list[Any]:
        """Residents of the campaign's site or building (a person once, however many
        units), with their active destinations, by person id after ``after``: read in
        the order of the ``(site_id, person_id)`` index, so a page costs a page."""
        people = select(Household.person_id).where(
            Household.site_id == campaign.site_id, active_on(today)
        )
        if campaign.building_id is not None:
            people = people.join(Unit, Unit.id == Household.unit_id).where(
                Unit.building_id == campaign.building_id
            )
        if after is not None:
            people = people.where(Household.person_id > after)
        page = people.distinct().order_by(Household.person_id).limit(limit).subquery()
        person: Any = Person
        joined: Any = Person.id == page.c.person_id
        locale: Any = Person.locale
        if self.is_postgres:
            # Each person looked up by key (a LATERAL with a LIMIT is never flattened):
            # joined plainly, the planner hashes every person of the partner for a page.
            person = select(Person.locale).where(joined).limit(1).lateral()
            joined, locale = true(), person.c.locale
        result = await self.session.execute(
            select(page.c.person_id, locale, Destination.id, Destination.kind)
            .select_from(page)
            .join(person, joined)
            .outerjoin(
                Destination,
                and_(Destination.person_id == page.c.person_id, Destination.active.is_(True)),
            )
            .order_by(page.c.person_id)
        )
        return list(result.all())

    async def muted(self, person_ids: Sequence[UUID], category: str) -> dict[UUID, Any]:
        if not person_ids:
            return {}
        result = await self.session.execute(
            select(Preference.person_id, Preference.enabled, Preference.channels).where(
                Preference.person_id.in_(person_ids), Preference.category == category
            )
        )
        return {row.person_id: row for row in result}

    # -- device outages --------------------------------------------------------------------

    async def outage(self, device_id: UUID) -> DeviceOutage | None:
        return await self.session.get(DeviceOutage, device_id)

    async def device_exists(self, device_id: UUID) -> bool:
        result = await self.session.execute(select(Device.id).where(Device.id == device_id))
        return result.first() is not None

    async def due_outages(
        self, *, offline_before: datetime, alerted_before: datetime
    ) -> list[tuple[DeviceOutage, bool, UUID, UUID]]:
        """Outages pending since before ``offline_before`` whose device was last alerted
        about before ``alerted_before`` (or never): with the device's ``online``, partner
        and site."""
        statement = (
            select(DeviceOutage, Device.online, Device.partner_id, Device.site_id)
            .join(Device, Device.id == DeviceOutage.device_id)
            .where(
                DeviceOutage.offline_since <= offline_before,
                or_(
                    DeviceOutage.last_alert_at.is_(None),
                    DeviceOutage.last_alert_at <= alerted_before,
                ),
            )
            .order_by(DeviceOutage.offline_since)
            .limit(500)
        )
        if self.is_postgres:
            statement = statement.with_for_update(of=DeviceOutage, skip_locked=True)
        result = await self.session.execute(statement)
        return [(o, bool(online), p, s) for o, online, p, s in result.all()]

    # -- alerts ----------------------------------------------------------------------------

    async def relay_lag(self, now: datetime) -> float:
        """Seconds the oldest event not yet taken by the router, or by the ledger, waits."""
        cursors: list[tuple[int, frozenset[str] | None]] = []
        state = await self.session.get(NotificationState, STATE_ROW)
        cursors.append((state.outbox_cursor if state else 0, None))
        ledger = await self.session.get(LedgerState, STATE_ROW)
        if ledger is not None:
            cursors.append((ledger.outbox_cursor, LEDGER_TOPICS))
        lag = 0.0
        for cursor, topics in cursors:
            statement = select(func.min(OutboxMessage.created_at)).where(OutboxMessage.id > cursor)
            if topics is not None:
                statement = statement.where(OutboxMessage.topic.in_(sorted(topics)))
            oldest = (await self.session.execute(statement)).scalar()
            if oldest is not None:
                lag = max(lag, (now - oldest).total_seconds())
        return lag

    async def finished_since(self, since: datetime) -> tuple[int, int]:
        """(deliveries that failed or died, deliveries finished) since then."""
        result = await self.session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.finished_at >= since)
            .group_by(Delivery.status)
        )
        counts = {str(status): int(n) for status, n in result.all()}
        failed = counts.get("failed", 0) + counts.get("dead", 0)
        return failed, sum(counts.values())

    async def firing(self, name: str) -> Alert | None:
        result = await self.session.execute(select(Alert).where(Alert.firing_key == name))
        return result.scalar_one_or_none()


OUTCOME_COLUMNS = (
    "b_id",
    "status",
    "next_attempt_at",
    "error_code",
    "error",
    "provider_id",
    "sent_at",
    "finished_at",
)
# Every outcome of a batch in one statement (a batch shares one lease).
RECORD_FROM_ARRAYS = text(
    """
    UPDATE notification_deliveries AS d SET
        status = v.status, next_attempt_at = v.next_attempt_at, leased_until = NULL,
        error_code = v.error_code, error = v.error, provider_id = v.provider_id,
        sent_at = v.sent_at, finished_at = v.finished_at, updated_at = :updated_at
    FROM unnest(
        CAST(:b_id AS uuid[]), CAST(:status AS varchar[]),
        CAST(:next_attempt_at AS timestamptz[]), CAST(:error_code AS varchar[]),
        CAST(:error AS varchar[]), CAST(:provider_id AS varchar[]),
        CAST(:sent_at AS timestamptz[]), CAST(:finished_at AS timestamptz[])
    ) AS v(id, status, next_attempt_at, error_code, error, provider_id, sent_at, finished_at)
    WHERE d.id = v.id AND d.leased_until = :lease
    """
)
CLAIMED = (
    "id",
    "transaction_id",
    "channel",
    "event_type",
    "category",
    "locale",
    "title",
    "body",
    "data",
    "attempts",
    "created_at",
    "destination_id",
    "person_id",
    "staff_id",
    "webhook_endpoint_id",
)


@functools.cache
def _claim_statement() -> Any:
    """PostgreSQL's claim, built once (a CTE of an UPDATE of a CTE takes milliseconds to
    assemble, on every batch): due rows locked with ``SKIP LOCKED``, so that concurrent
    senders never take the same; leased and returned with where each goes."""
    deliveries = cast(Table, Delivery.__table__)
    d = deliveries.c
    picked = (
        select(d.id)
        .where(
            d.status == DeliveryStatus.QUEUED.value,
            d.next_attempt_at <= bindparam("now", type_=UTCDateTime()),
        )
        .order_by(d.next_attempt_at)
        .limit(bindparam("limit", type_=Integer()))
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    lease_until = bindparam("lease_until", type_=UTCDateTime())
    claimed = (
        update(deliveries)
        .values(next_attempt_at=lease_until, leased_until=lease_until, attempts=d.attempts + 1)
        .where(d.id == picked.c.id)
        .returning(*(d[name] for name in CLAIMED))
        .cte("claimed")
    )
    return _with_destinations(claimed, claimed.c)


def _with_destinations(source: Any, columns: Any) -> Any:
    """Claimed deliveries with where each goes: a destination's address and keys, a staff
    member's account address, a person's phone (SMS), a webhook endpoint's URL and
    sealed secrets."""
    return (
        select(
            *(columns[name] for name in CLAIMED),
            Destination.address,
            Destination.keys,
            Destination.active.label("destination_active"),
            Destination.deactivated_reason.label("destination_reason"),
            StaffAccount.email.label("staff_email"),
            Person.phone.label("person_phone"),
            WebhookEndpoint.url,
            WebhookEndpoint.sealed_secret,
            WebhookEndpoint.sealed_previous_secret,
            WebhookEndpoint.previous_expires_at,
            WebhookEndpoint.active.label("endpoint_active"),
        )
        .select_from(source)
        .outerjoin(Destination, Destination.id == columns.destination_id)
        .outerjoin(StaffAccount, StaffAccount.id == columns.staff_id)
        .outerjoin(Person, (Person.id == columns.person_id) & (columns.channel == "sms"))
        .outerjoin(WebhookEndpoint, WebhookEndpoint.id == columns.webhook_endpoint_id)
    )


def _pg_type(column: Column[Any]) -> str:
    """The PostgreSQL type a column's values travel as (JSON as text, cast on insert)."""
    kind = column.type
    if isinstance(kind, Uuid):
        return "uuid"
    if isinstance(kind, BigInteger):
        return "int8"
    if isinstance(kind, Integer):
        return "int4"
    if isinstance(kind, UTCDateTime):
        return "timestamptz"
    if isinstance(kind, String | Enum | JSON):  # Text and Enum are Strings; JSON as text
        return "text"
    raise TypeError(f"no type for {column.name}")  # a new column: add it here


def _insert_from_arrays(rows: list[dict[str, Any]]) -> tuple[TextClause, dict[str, Any]]:
    """``INSERT … SELECT FROM unnest(…)`` for these delivery rows: every column any row
    names, and those with a Python default (``id``), filled in as the ORM would. A value
    the same in every row (a campaign's partner, site, times, data) travels once."""
    table = cast(Table, Delivery.__table__)
    named = set().union(*rows)
    values: dict[str, Any] = {}
    arrays: list[str] = []
    scalars: list[str] = []
    for column in table.columns:
        name = column.name
        if name not in named and column.default is None:
            continue
        fill = _default_of(column)
        given: Any = [row[name] if name in row else fill() for row in rows]
        first = given[0]
        constant = not (column.primary_key or column.unique) and all(v == first for v in given)
        if constant:
            given = first
        if isinstance(column.type, JSON):
            given = json_text(given) if constant else [json_text(v) for v in given]
        values[name] = given
        (scalars if constant else arrays).append(name)
    return _insert_statement(tuple(arrays), tuple(scalars)), values


def _default_of(column: Column[Any]) -> Callable[[], Any]:
    default = column.default
    if isinstance(default, CallableColumnDefault):
        make: Any = default.arg  # SQLAlchemy's wrapper: takes an (unused) execution context
        return lambda: make(None)
    if isinstance(default, ScalarElementColumnDefault):
        value = default.arg
        return lambda: value
    return lambda: None


@functools.cache
def _insert_statement(arrays: tuple[str, ...], scalars: tuple[str, ...]) -> TextClause:
    table = cast(Table, Delivery.__table__)

    def value(name: str, source: str) -> str:
        given = f"CAST({source} AS {_pg_type(table.c[name])})"
        return f"CAST({given} AS json)" if isinstance(table.c[name].type, JSON) else given

    names = arrays + scalars
    picked = [
        f"CAST(v.{n} AS json)" if isinstance(table.c[n].type, JSON) else f"v.{n}" for n in arrays
    ] + [value(n, f":{n}") for n in scalars]
    unnest = ", ".join(f"CAST(:{n} AS {_pg_type(table.c[n])}[])" for n in arrays)
    return text(
        f"INSERT INTO {table.name} ({', '.join(names)}) "  # noqa: S608  (our own column names)
        f"SELECT {', '.join(picked)} FROM unnest({unnest}) AS v({', '.join(arrays)}) "
        "ON CONFLICT (transaction_id) DO NOTHING"
    )


def _param(name: str) -> Any:
    return bindparam(name)


class DeliveryRepository(CrudRepository[Delivery]):
    model = Delivery

    def filter_clauses(self, query: Any) -> list[Any]:
        names = ("status", "channel", "category", "person_id", "campaign_id", "site_id")
        return [
            getattr(Delivery, n) == getattr(query, n)
            for n in names
            if getattr(query, n, None) is not None
        ]

    async def of_owner(
        self, person_ids: Sequence[UUID], staff_id: UUID | None, before: UUID | None, limit: int
    ) -> Sequence[Delivery]:
        owner = (
            Delivery.staff_id == staff_id
            if staff_id is not None
            else Delivery.person_id.in_(person_ids)
        )
        statement = select(Delivery).where(owner)
        if before is not None:
            statement = statement.where(Delivery.id < before)
        result = await self.session.execute(statement.order_by(Delivery.id.desc()).limit(limit))
        return result.scalars().all()


class CampaignRepository(CrudRepository[Campaign]):
    model = Campaign

    def filter_clauses(self, query: Any) -> list[Any]:
        names = ("site_id", "status")
        return [
            getattr(Campaign, n) == getattr(query, n)
            for n in names
            if getattr(query, n, None) is not None
        ]


class WebhookEndpointRepository(CrudRepository[WebhookEndpoint]):
    model = WebhookEndpoint
