"""Prepared statements keep the tenant's scope; Core inserts keep the model's defaults.

A prepared statement (the GET by id, the open path's device lookup) is built once per
shape of scope and reused with other values bound, so a second partner, another site
list or an empty one must still see only its own rows. ``insert_new`` writes new objects
without the unit of work, so it must give them the defaults the flush would.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest
from sqlalchemy import text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sesame.devices.repository import DeviceRepository
from sesame.kit.db import commit, write_intent
from sesame.kit.repository import TenantScope, insert_new, new_rows
from sesame.models import AccessEvent, AccessMethod, AccessResult, DeviceKind
from sesame.runtime import Runtime
from sesame.sites.repository import BuildingRepository
from sesame.staff.repository import StaffRepository
from tests.support import World


async def test_get_by_id_confines_every_shape_of_scope(
    runtime: Runtime, world: World, other_world: World
) -> None:
    """Each scope finds the rows it may see and not one other, through the same statement."""
    building = UUID(world.ids["building"])
    other_site_building = UUID(world.other_site_ids["building"])
    partner, other_partner = UUID(world.partner_id), UUID(other_world.partner_id)
    site, other_site = UUID(world.site_id), UUID(world.other_site_id)
    async with runtime.read_session_factory() as session:
        repository = BuildingRepository(session)
        for scope, visible, hidden in (
            (TenantScope.platform(), [building, other_site_building], []),
            (TenantScope(partner_id=partner), [building, other_site_building], []),
            (TenantScope(partner_id=other_partner), [], [building, other_site_building]),
            (
                TenantScope(partner_id=partner, site_ids=frozenset({site})),
                [building],
                [other_site_building],
            ),
            (
                TenantScope(partner_id=partner, site_ids=frozenset({other_site})),
                [other_site_building],
                [building],
            ),
            (TenantScope(partner_id=partner, site_ids=frozenset()), [], [building]),
        ):
            for object_id in visible:
                assert await repository.get(scope, object_id) is not None, scope
            for object_id in hidden:
                assert await repository.get(scope, object_id) is None, scope


async def test_get_by_id_applies_the_repository_load_options(
    runtime: Runtime, world: World
) -> None:
    """A staff account comes with its site scopes loaded (they are read after the session)."""
    manager = world.staff["site_manager"]
    async with runtime.read_session_factory() as session:
        account = await StaffRepository(session).get(
            TenantScope(partner_id=UUID(world.partner_id)), UUID(manager["id"])
        )
    assert account is not None
    assert account.site_ids == [UUID(world.site_id)]


def _scopes(world: World, other_world: World) -> list[tuple[TenantScope, bool, bool]]:
    """Each shape of scope, and whether it sees the first site and the second."""
    partner, other_partner = UUID(world.partner_id), UUID(other_world.partner_id)
    site, other_site = UUID(world.site_id), UUID(world.other_site_id)
    return [
        (TenantScope.platform(), True, True),
        (TenantScope(partner_id=partner), True, True),
        (TenantScope(partner_id=other_partner), False, False),
        (TenantScope(partner_id=partner, site_ids=frozenset({site})), True, False),
        (TenantScope(partner_id=partner, site_ids=frozenset({other_site})), False, True),
        (TenantScope(partner_id=partner, site_ids=frozenset()), False, False),
    ]


async def test_the_opener_lookup_confines_every_shape_of_scope(
    runtime: Runtime, world: World, other_world: World
) -> None:
    """The open path's prepared lookup finds an entrance's reader only within the scope."""
    entrances = (UUID(world.ids["entrance"]), UUID(world.other_site_ids["entrance"]))
    readers = (UUID(world.ids["device"]), UUID(world.other_site_ids["device"]))
    async with runtime.session_factory() as session:
        repository = DeviceRepository(session)
        for scope, *sees in _scopes(world, other_world):
            for entrance, reader, visible in zip(entrances, readers, sees, strict=True):
                found = await repository.opener_of(scope, entrance, [DeviceKind.ENTRANCE_READER])
                assert (found[0].id if found else None) == (reader if visible else None), scope


async def test_insert_new_gives_new_rows_the_defaults_a_flush_would(
    runtime: Runtime, world: World
) -> None:
    """Unset columns get their Python default on the row and on the object; the row reads
    back as written."""
    event = AccessEvent(
        partner_id=UUID(world.partner_id),
        site_id=UUID(world.site_id),
        at=datetime(2026, 12, 4, 9, 30, tzinfo=UTC),
        result=AccessResult.GRANTED,
        method=AccessMethod.REMOTE,
    )
    (row,) = new_rows([event])
    assert isinstance(event.id, UUID)  # default=new_id
    assert (row["id"], row["data"], row["key_id"]) == (event.id, {}, None)
    assert (event.data, event.key_id) == ({}, None)  # default=dict; no default: NULL
    with write_intent():
        async with runtime.session_factory() as session:
            await insert_new(session, [event])
            await commit(session)
    async with runtime.read_session_factory() as session:
        stored = await session.get(AccessEvent, event.id)
    assert stored is not None
    assert (stored.result, stored.method, stored.at, stored.data) == (
        AccessResult.GRANTED,
        AccessMethod.REMOTE,
        event.at,
        {},
    )


class _Scratch(DeclarativeBase):
    pass


class _Counter(_Scratch):
    __tablename__ = "scratch_counters"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(server_default=text("0"))


def test_new_rows_refuses_a_column_only_the_server_would_fill() -> None:
    """Its value would be on the row in the database and unknown to the object."""
    with pytest.raises(ValueError, match="server default"):
        new_rows([_Counter(id=1)])
    assert new_rows([_Counter(id=2, value=5)]) == [{"id": 2, "value": 5}]
