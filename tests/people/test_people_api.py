"""People and households through the API."""

from __future__ import annotations

from tests.support import Api, World, unique_phone


async def test_phone_numbers_are_stored_in_e164(api: Api, world: World) -> None:
    """A Korean national number is accepted and stored in E.164 form."""
    person = await api.create(
        "/v1/people", world.tokens["partner_admin"], {"phone": "010-2345-6789", "name": "홍길동"}
    )
    assert person["phone"] == "+821023456789"
    assert person["locale"] == "ko-KR"
    assert person["kind"] == "resident"


async def test_invalid_phone_is_a_field_error(api: Api, world: World) -> None:
    response = await api.post(
        "/v1/people", token=world.tokens["partner_admin"], json={"phone": "12345", "name": "X"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == ["body", "phone"]


async def test_same_phone_twice_in_a_partner_is_a_conflict(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    phone = unique_phone()
    await api.create("/v1/people", token, {"phone": phone, "name": "A"})
    again = await api.post("/v1/people", token=token, json={"phone": phone, "name": "B"})
    assert again.status_code == 409


async def test_same_phone_in_two_partners_is_allowed(
    api: Api, world: World, other_world: World
) -> None:
    phone = unique_phone()
    await api.create("/v1/people", world.tokens["partner_admin"], {"phone": phone, "name": "A"})
    await api.create(
        "/v1/people", other_world.tokens["partner_admin"], {"phone": phone, "name": "A"}
    )


async def test_site_manager_must_place_people_in_their_sites(api: Api, world: World) -> None:
    token = world.tokens["site_manager"]
    no_site = await api.post("/v1/people", token=token, json={"phone": unique_phone(), "name": "A"})
    assert no_site.status_code == 422
    other_site = await api.post(
        "/v1/people",
        token=token,
        json={"phone": unique_phone(), "name": "A", "site_id": world.other_site_id},
    )
    assert other_site.status_code == 404
    mine = await api.create(
        "/v1/people", token, {"phone": unique_phone(), "name": "A", "site_id": world.site_id}
    )
    assert mine["site_id"] == world.site_id


async def test_household_dates_must_be_in_order(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    person = await api.create("/v1/people", token, {"phone": unique_phone(), "name": "A"})
    backwards = await api.post(
        "/v1/households",
        token=token,
        json={
            "person_id": person["id"],
            "unit_id": world.ids["unit"],
            "move_in_on": "2026-03-01",
            "move_out_on": "2026-02-01",
        },
    )
    assert backwards.status_code == 422
    household = await api.create(
        "/v1/households",
        token,
        {"person_id": person["id"], "unit_id": world.ids["unit"], "move_in_on": "2026-03-01"},
    )
    assert household["site_id"] == world.site_id
    bad_update = await api.patch(
        f"/v1/households/{household['id']}", token=token, json={"move_out_on": "2026-01-01"}
    )
    assert bad_update.status_code == 422
    moved_out = await api.patch(
        f"/v1/households/{household['id']}", token=token, json={"move_out_on": "2026-09-30"}
    )
    assert moved_out.json()["move_out_on"] == "2026-09-30"


async def test_households_filter_by_date_of_residence(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    person = await api.create("/v1/people", token, {"phone": unique_phone(), "name": "A"})
    household = await api.create(
        "/v1/households",
        token,
        {
            "person_id": person["id"],
            "unit_id": world.ids["unit"],
            "role": "tenant",
            "move_in_on": "2025-01-01",
            "move_out_on": "2025-12-31",
        },
    )
    during = await api.get(
        "/v1/households", token=token, params={"person_id": person["id"], "active_on": "2025-06-01"}
    )
    after = await api.get(
        "/v1/households", token=token, params={"person_id": person["id"], "active_on": "2026-06-01"}
    )
    assert [h["id"] for h in during.json()["items"]] == [household["id"]]
    assert after.json()["items"] == []


async def test_household_needs_person_and_unit_of_the_same_partner(
    api: Api, world: World, other_world: World
) -> None:
    response = await api.post(
        "/v1/households",
        token=world.tokens["partner_admin"],
        json={"person_id": other_world.ids["person"], "unit_id": world.ids["unit"]},
    )
    assert response.status_code == 404


async def test_person_with_a_household_or_key_history_cannot_be_deleted(
    api: Api, world: World
) -> None:
    """A household blocks deletion; so do keys, revoked or not: they are evidence."""
    token = world.tokens["partner_admin"]
    response = await api.delete(f"/v1/people/{world.ids['person']}", token=token)
    assert response.status_code == 409
    assert (
        await api.delete(f"/v1/households/{world.ids['household']}", token=token)
    ).status_code == 204
    again = await api.delete(f"/v1/people/{world.ids['person']}", token=token)
    assert again.status_code == 409
    assert again.json()["type"] == "has_dependents"
    newcomer = await api.create("/v1/people", token, {"phone": unique_phone(), "name": "N"})
    assert (await api.delete(f"/v1/people/{newcomer['id']}", token=token)).status_code == 204
