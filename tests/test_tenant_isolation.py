"""Tenant isolation, for every resource and every role.

Another partner's object is a 404 on read, update and delete, and never appears in a
list; for staff scoped to sites, so is an object of their partner's other sites. A role
that may not touch a kind of resource at all gets 403.
"""

from __future__ import annotations

import pytest

from tests.support import Api, World

# resource -> (path, a harmless PATCH body)
RESOURCES = {
    "partner": ("/v1/partners", {"name": "renamed"}),
    "site": ("/v1/sites", {"address": "elsewhere"}),
    "building": ("/v1/buildings", {"floor_count": 20}),
    "unit": ("/v1/units", {"floor": 2}),
    "entrance": ("/v1/entrances", {"name": "renamed"}),
    "person": ("/v1/people", {"name": "renamed"}),
    "household": ("/v1/households", {"role": "member"}),
    "staff_account": ("/v1/staff", {"name": "renamed"}),
    "api_key": ("/v1/api-keys", {"name": "renamed"}),
    "device": ("/v1/devices", {"name": "renamed"}),
    "key": ("/v1/keys", {"name": "renamed"}),
    "pin_code": ("/v1/pin-codes", {"name": "renamed"}),
}
ROLES = ("partner_admin", "site_manager", "installer", "api_key")

# What each role may do with each resource of its own scope: "rw", "r" or "" (403).
ALLOWED = {
    "partner_admin": dict.fromkeys(RESOURCES, "rw"),
    "site_manager": {
        "partner": "r",
        "site": "rw",
        "building": "rw",
        "unit": "rw",
        "entrance": "rw",
        "person": "rw",
        "household": "rw",
        "staff_account": "",
        "api_key": "",
        "device": "rw",
        "key": "rw",
        "pin_code": "rw",
    },
    "installer": {
        "partner": "r",
        "site": "r",
        "building": "r",
        "unit": "r",
        "entrance": "r",
        "person": "",
        "household": "",
        "staff_account": "",
        "api_key": "",
        "device": "rw",
        "key": "",
        "pin_code": "",
    },
    "api_key": {
        "partner": "rw",
        "site": "rw",
        "building": "rw",
        "unit": "rw",
        "entrance": "rw",
        "person": "rw",
        "household": "rw",
        "staff_account": "",
        "api_key": "",
        "device": "rw",
        "key": "rw",
        "pin_code": "rw",
    },
}


def _denied_status(role: str, resource: str, action: str = "r") -> int:
    """Another tenant's object: 404 where the role may do ``action`` ("r" or "w") to the
    kind at all, else 403 (decided before any lookup, so it reveals nothing either)."""
    return 404 if action in ALLOWED[role][resource] else 403


@pytest.mark.parametrize("role", ROLES)
async def test_another_partners_objects_are_invisible(
    api: Api, world: World, other_world: World, role: str
) -> None:
    token = world.tokens[role]
    for resource, (path, patch) in RESOURCES.items():
        foreign_id = other_world.ids[resource]
        read = await api.get(f"{path}/{foreign_id}", token=token)
        assert read.status_code == _denied_status(role, resource), (role, resource, read.text)
        update = await api.patch(f"{path}/{foreign_id}", token=token, json=patch)
        assert update.status_code == _denied_status(role, resource, "w"), (role, resource)
        delete = await api.delete(f"{path}/{foreign_id}", token=token)
        assert delete.status_code == _denied_status(role, resource, "w"), (role, resource)
        listed = await api.get(path, token=token, params={"limit": 200})
        if "r" in ALLOWED[role][resource]:
            assert listed.status_code == 200
            ids = {item["id"] for item in listed.json()["items"]}
            assert foreign_id not in ids, (role, resource)
        else:
            assert listed.status_code == 403, (role, resource)
    # The other partner's objects are all still there.
    for resource, (path, _) in RESOURCES.items():
        owner = other_world.tokens["partner_admin"]
        assert (
            await api.get(f"{path}/{other_world.ids[resource]}", token=owner)
        ).status_code == 200, resource


@pytest.mark.parametrize("role", ["site_manager", "installer"])
async def test_site_staff_see_only_their_sites(api: Api, world: World, role: str) -> None:
    token = world.tokens[role]
    for resource in (
        "site",
        "building",
        "unit",
        "entrance",
        "person",
        "household",
        "device",
        "key",
        "pin_code",
    ):
        path = RESOURCES[resource][0]
        foreign_id = world.other_site_ids[resource]
        expected = _denied_status(role, resource)
        assert (await api.get(f"{path}/{foreign_id}", token=token)).status_code == expected
        if "r" in ALLOWED[role][resource]:
            own = await api.get(f"{path}/{world.ids[resource]}", token=token)
            assert own.status_code == 200, (role, resource)
            listed = await api.get(path, token=token, params={"limit": 200})
            ids = {item["id"] for item in listed.json()["items"]}
            assert world.ids[resource] in ids, (role, resource)
            assert foreign_id not in ids, (role, resource)


@pytest.mark.parametrize("role", ROLES)
async def test_roles_get_403_for_what_they_may_not_touch(api: Api, world: World, role: str) -> None:
    token = world.tokens[role]
    for resource, (path, patch) in RESOURCES.items():
        allowed = ALLOWED[role][resource]
        own_id = world.ids[resource]
        if not allowed:
            assert (await api.get(f"{path}/{own_id}", token=token)).status_code == 403
        elif "w" not in allowed:
            response = await api.patch(f"{path}/{own_id}", token=token, json=patch)
            assert response.status_code == 403, (role, resource)


async def test_platform_admin_sees_every_partner(
    api: Api, world: World, other_world: World, admin_token: str
) -> None:
    for resource, (path, _) in RESOURCES.items():
        for w in (world, other_world):
            response = await api.get(f"{path}/{w.ids[resource]}", token=admin_token)
            assert response.status_code == 200, resource


async def test_references_to_another_partners_objects_are_not_found(
    api: Api, world: World, other_world: World
) -> None:
    """Creating a child under another tenant's parent is the same 404 as an unknown id."""
    token = world.tokens["partner_admin"]
    cases = [
        ("/v1/buildings", {"site_id": other_world.site_id, "name": "X동"}),
        ("/v1/units", {"building_id": other_world.ids["building"], "name": "X", "floor": 1}),
        ("/v1/entrances", {"site_id": other_world.site_id, "name": "X"}),
        ("/v1/households", {"person_id": world.ids["person"], "unit_id": other_world.ids["unit"]}),
        ("/v1/sites", {"partner_id": other_world.partner_id, "name": "X"}),
    ]
    for path, body in cases:
        response = await api.post(path, token=token, json=body)
        assert response.status_code == 404, (path, response.text)
