"""The shared repository's GET by id: one prebuilt statement, the tenant's scope intact.

The statement is built once per repository and shape of scope and reused with other
values bound, so a second partner, another site list or an empty one must still see
only its own rows.
"""

from __future__ import annotations

from uuid import UUID

from sesame.kit.repository import TenantScope
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
