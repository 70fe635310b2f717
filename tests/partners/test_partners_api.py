"""Partners are the tenants; only platform staff create and remove them."""

from __future__ import annotations

from tests.support import Api, World, unique


async def test_platform_admin_manages_partners(api: Api, admin_token: str) -> None:
    partner = await api.create(
        "/v1/partners", admin_token, {"name": unique("Stays"), "kind": "hospitality"}
    )
    assert partner["kind"] == "hospitality"
    listed = await api.get(
        "/v1/partners", token=admin_token, params={"q": partner["name"], "kind": "hospitality"}
    )
    assert [p["id"] for p in listed.json()["items"]] == [partner["id"]]
    assert (await api.delete(f"/v1/partners/{partner['id']}", token=admin_token)).status_code == 204


async def test_partner_admin_renames_own_partner_only(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    renamed = await api.patch(
        f"/v1/partners/{world.partner_id}", token=token, json={"name": "Renamed Properties"}
    )
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Renamed Properties"
    kind = await api.patch(
        f"/v1/partners/{world.partner_id}", token=token, json={"kind": "hospitality"}
    )
    assert kind.status_code == 403
    create = await api.post("/v1/partners", token=token, json={"name": unique("Mine")})
    assert create.status_code == 403
    delete = await api.delete(f"/v1/partners/{world.partner_id}", token=token)
    assert delete.status_code == 403


async def test_site_staff_see_their_own_partner(api: Api, world: World) -> None:
    for role in ("site_manager", "installer"):
        response = await api.get("/v1/partners", token=world.tokens[role])
        assert [p["id"] for p in response.json()["items"]] == [world.partner_id]


async def test_partner_with_sites_cannot_be_deleted(
    api: Api, world: World, admin_token: str
) -> None:
    response = await api.delete(f"/v1/partners/{world.partner_id}", token=admin_token)
    assert response.status_code == 409
