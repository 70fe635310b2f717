"""Residents reach only their own keys and doors; staff only their scope's access log."""

from __future__ import annotations

from typing import Any

from tests.keys.test_keys_e2e import sign_in
from tests.support import Api, World


async def resident_of(api: Api, runtime: Any, world: World) -> str:
    person = (
        await api.get(f"/v1/people/{world.ids['person']}", token=world.tokens["partner_admin"])
    ).json()
    return await sign_in(api, runtime, person["phone"])


async def refused_open(api: Api, world: World, token: str) -> None:
    await api.patch(
        f"/v1/keys/{world.ids['key']}",
        token=world.tokens["partner_admin"],
        json={"status": "suspended"},
    )
    response = await api.post(f"/v1/entrances/{world.ids['entrance']}/open", token=token)
    assert response.status_code == 403


async def test_residents_see_and_touch_only_their_own_keys(
    api: Api, world: World, runtime: Any
) -> None:
    mine = await resident_of(api, runtime, world)
    keys = (await api.get("/v1/me/keys", token=mine)).json()
    assert [k["id"] for k in keys] == [world.ids["key"]]
    other_key = world.other_site_ids["key"]
    share = await api.post(
        f"/v1/me/keys/{other_key}/share", token=mine, json={"phone": "+821055550000", "name": "x"}
    )
    assert share.status_code == 404
    assert (await api.delete(f"/v1/me/keys/{other_key}", token=mine)).status_code == 404
    for path in ("/v1/keys", "/v1/pin-codes", f"/v1/keys/{world.ids['key']}"):
        assert (await api.get(path, token=mine)).status_code == 403, path


async def test_the_access_log_is_private(
    api: Api, world: World, other_world: World, runtime: Any
) -> None:
    mine = await resident_of(api, runtime, world)
    theirs = await resident_of(api, runtime, other_world)
    await refused_open(api, world, mine)
    await refused_open(api, other_world, theirs)
    own = (await api.get("/v1/access-events", token=mine)).json()["items"]
    assert [e["key_id"] for e in own] == [world.ids["key"]]
    other = (await api.get("/v1/access-events", token=theirs)).json()["items"]
    assert [e["key_id"] for e in other] == [other_world.ids["key"]]
    manager = (await api.get("/v1/access-events", token=world.tokens["site_manager"])).json()[
        "items"
    ]
    assert {e["site_id"] for e in manager} == {world.site_id}
    assert world.ids["key"] in {e["key_id"] for e in manager}
    foreign = (
        await api.get("/v1/access-events", token=other_world.tokens["partner_admin"])
    ).json()["items"]
    assert world.ids["key"] not in {e["key_id"] for e in foreign}
    assert (await api.get("/v1/access-events", token=world.tokens["installer"])).status_code == 403


async def test_signing_keys_are_published_per_site(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    rotated = await api.post(f"/v1/sites/{world.site_id}/signing-keys/rotate", token=token)
    assert rotated.status_code == 201
    again = await api.post(f"/v1/sites/{world.site_id}/signing-keys/rotate", token=token)
    published = (await api.get(f"/v1/sites/{world.site_id}/signing-keys", token=token)).json()
    assert [k["id"] for k in published] == [rotated.json()["id"], again.json()["id"]]
    assert [k["active"] for k in published] == [False, True]
    assert (
        await api.get(
            f"/v1/sites/{world.other_site_id}/signing-keys", token=world.tokens["site_manager"]
        )
    ).status_code == 404
