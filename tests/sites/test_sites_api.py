"""Sites, buildings, units and entrances through the API, as a partner's staff use them."""

from __future__ import annotations

from tests.support import Api, World, unique


async def test_site_lifecycle_create_read_update_list_delete(api: Api, world: World) -> None:
    """A partner admin creates a site in their partner; it defaults to Seoul time."""
    token = world.tokens["partner_admin"]
    created = await api.create(
        "/v1/sites", token, {"name": unique("Hillstate"), "address": "서울 송파구"}
    )
    assert created["partner_id"] == world.partner_id
    assert created["time_zone"] == "Asia/Seoul"
    assert created["kind"] == "apartment_complex"

    read = await api.get(f"/v1/sites/{created['id']}", token=token)
    assert read.status_code == 200
    assert read.json() == created

    updated = await api.patch(
        f"/v1/sites/{created['id']}",
        token=token,
        json={"time_zone": "America/New_York", "kind": "stay"},
    )
    assert updated.status_code == 200
    assert updated.json()["time_zone"] == "America/New_York"
    assert updated.json()["kind"] == "stay"

    listed = await api.get("/v1/sites", token=token, params={"kind": "stay"})
    assert [s["id"] for s in listed.json()["items"]] == [created["id"]]

    assert (await api.delete(f"/v1/sites/{created['id']}", token=token)).status_code == 204
    assert (await api.get(f"/v1/sites/{created['id']}", token=token)).status_code == 404


async def test_create_answers_201_with_location(api: Api, world: World) -> None:
    """Every create names the new object's URL."""
    response = await api.post(
        "/v1/buildings",
        token=world.tokens["partner_admin"],
        json={"site_id": world.site_id, "name": "102동"},
    )
    assert response.status_code == 201
    assert response.headers["location"] == f"/v1/buildings/{response.json()['id']}"


async def test_unknown_time_zone_is_a_field_error(api: Api, world: World) -> None:
    response = await api.post(
        "/v1/sites",
        token=world.tokens["partner_admin"],
        json={"name": unique("Site"), "time_zone": "Mars/Olympus"},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["type"] == "validation_error"
    assert ["body", "time_zone"] in [e["path"] for e in body["errors"]]


async def test_duplicate_building_name_in_a_site_is_a_conflict(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    response = await api.post(
        "/v1/buildings", token=token, json={"site_id": world.site_id, "name": "101동"}
    )
    assert response.status_code == 409
    assert response.json()["type"] == "conflict"


async def test_site_with_buildings_cannot_be_deleted(api: Api, world: World) -> None:
    """Deleting a site that still has buildings is refused, not cascaded."""
    response = await api.delete(f"/v1/sites/{world.site_id}", token=world.tokens["partner_admin"])
    assert response.status_code == 409
    assert response.json()["type"] == "has_dependents"
    assert (
        await api.get(f"/v1/sites/{world.site_id}", token=world.tokens["partner_admin"])
    ).status_code == 200


async def test_units_inherit_site_and_respect_the_top_floor(api: Api, world: World) -> None:
    token = world.tokens["site_manager"]
    unit = await api.create(
        "/v1/units", token, {"building_id": world.ids["building"], "name": "B101호", "floor": -1}
    )
    assert unit["site_id"] == world.site_id
    assert unit["partner_id"] == world.partner_id
    too_high = await api.post(
        "/v1/units",
        token=token,
        json={"building_id": world.ids["building"], "name": "1601호", "floor": 16},
    )
    assert too_high.status_code == 422
    assert too_high.json()["errors"][0]["path"] == ["body", "floor"]
    moved = await api.patch(f"/v1/units/{unit['id']}", token=token, json={"floor": 99})
    assert moved.status_code == 422


async def test_units_filter_by_building_and_floor(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    for floor in (3, 3, 4):
        await api.create(
            "/v1/units",
            token,
            {"building_id": world.ids["building"], "name": unique("호"), "floor": floor},
        )
    third = await api.get(
        "/v1/units", token=token, params={"building_id": world.ids["building"], "floor": 3}
    )
    assert len(third.json()["items"]) == 2
    assert {u["floor"] for u in third.json()["items"]} == {3}


async def test_entrance_placement_must_be_consistent(api: Api, world: World) -> None:
    """A unit door needs a unit of the same site; the unit's building is filled in."""
    token = world.tokens["partner_admin"]
    door = await api.create(
        "/v1/entrances",
        token,
        {
            "site_id": world.site_id,
            "name": "1001호 현관",
            "kind": "unit_door",
            "unit_id": world.ids["unit"],
        },
    )
    assert door["building_id"] == world.ids["building"]

    missing_unit = await api.post(
        "/v1/entrances",
        token=token,
        json={"site_id": world.site_id, "name": "문", "kind": "unit_door"},
    )
    assert missing_unit.status_code == 422
    assert missing_unit.json()["errors"][0]["path"] == ["body", "unit_id"]

    wrong_site = await api.post(
        "/v1/entrances",
        token=token,
        json={
            "site_id": world.site_id,
            "name": "문",
            "kind": "unit_door",
            "unit_id": world.other_site_ids["unit"],
        },
    )
    assert wrong_site.status_code == 422
    assert wrong_site.json()["errors"][0]["code"] == "wrong_site"


async def test_null_for_a_required_field_is_refused(api: Api, world: World) -> None:
    response = await api.patch(
        f"/v1/buildings/{world.ids['building']}",
        token=world.tokens["partner_admin"],
        json={"name": None},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == ["body", "name"]


async def test_site_staff_cannot_create_or_delete_sites(api: Api, world: World) -> None:
    token = world.tokens["site_manager"]
    create = await api.post("/v1/sites", token=token, json={"name": unique("Mine")})
    assert create.status_code == 403
    update = await api.patch(
        f"/v1/sites/{world.site_id}", token=token, json={"address": "new address"}
    )
    assert update.status_code == 200


async def test_installer_reads_but_does_not_write_places(api: Api, world: World) -> None:
    token = world.tokens["installer"]
    assert (await api.get(f"/v1/entrances/{world.ids['entrance']}", token=token)).status_code == 200
    response = await api.post(
        "/v1/buildings", token=token, json={"site_id": world.site_id, "name": "103동"}
    )
    assert response.status_code == 403
    assert response.json()["type"] == "forbidden"
