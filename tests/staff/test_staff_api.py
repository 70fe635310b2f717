"""Staff accounts: who may create whom, and what changes end sessions."""

from __future__ import annotations

from tests.support import PASSWORD, Api, World, unique


def _account(world: World, role: str, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "email": f"{unique(role)}@partner.test",
        "name": role,
        "role": role,
        "password": PASSWORD,
    }
    if role in ("site_manager", "installer"):
        body["site_ids"] = [world.site_id]
    body.update(extra)
    return body


async def test_partner_admin_creates_staff_in_own_partner(api: Api, world: World) -> None:
    created = await api.create(
        "/v1/staff", world.tokens["partner_admin"], _account(world, "site_manager")
    )
    assert created["partner_id"] == world.partner_id
    assert created["site_ids"] == [world.site_id]
    assert "password" not in created
    assert "password_hash" not in created


async def test_only_platform_admins_grant_platform_admin(
    api: Api, world: World, admin_token: str
) -> None:
    refused = await api.post(
        "/v1/staff", token=world.tokens["partner_admin"], json=_account(world, "platform_admin")
    )
    assert refused.status_code == 403
    created = await api.create("/v1/staff", admin_token, _account(world, "platform_admin"))
    assert created["partner_id"] is None


async def test_site_roles_need_sites_of_their_partner(
    api: Api, world: World, other_world: World
) -> None:
    token = world.tokens["partner_admin"]
    no_sites = await api.post(
        "/v1/staff", token=token, json=_account(world, "installer", site_ids=[])
    )
    assert no_sites.status_code == 422
    foreign = await api.post(
        "/v1/staff", token=token, json=_account(world, "installer", site_ids=[other_world.site_id])
    )
    assert foreign.status_code == 404
    admin_with_sites = await api.post(
        "/v1/staff", token=token, json=_account(world, "partner_admin", site_ids=[world.site_id])
    )
    assert admin_with_sites.status_code == 422


async def test_short_password_is_refused(api: Api, world: World) -> None:
    response = await api.post(
        "/v1/staff",
        token=world.tokens["partner_admin"],
        json=_account(world, "installer", password="pw-x9z"),
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == ["body", "password"]
    assert "pw-x9z" not in response.text


async def test_duplicate_email_is_a_conflict(api: Api, world: World) -> None:
    body = _account(world, "installer", email=world.staff["installer"]["email"])
    response = await api.post("/v1/staff", token=world.tokens["partner_admin"], json=body)
    assert response.status_code == 409


async def test_new_password_ends_every_session(api: Api, world: World) -> None:
    installer = world.staff["installer"]
    before = await api.get("/v1/me", token=world.tokens["installer"])
    assert before.status_code == 200
    changed = await api.patch(
        f"/v1/staff/{installer['id']}",
        token=world.tokens["partner_admin"],
        json={"password": "a brand new long password"},
    )
    assert changed.status_code == 200
    after = await api.get("/v1/me", token=world.tokens["installer"])
    assert after.status_code == 401
    assert (await api.login(installer["email"], "a brand new long password"))["access_token"]


async def test_deactivated_staff_cannot_sign_in_or_use_tokens(api: Api, world: World) -> None:
    manager = world.staff["site_manager"]
    await api.patch(
        f"/v1/staff/{manager['id']}", token=world.tokens["partner_admin"], json={"is_active": False}
    )
    assert (await api.get("/v1/me", token=world.tokens["site_manager"])).status_code == 401
    login = await api.post("/v1/auth/login", json={"email": manager["email"], "password": PASSWORD})
    assert login.status_code == 401


async def test_nobody_demotes_deactivates_or_deletes_themselves(api: Api, world: World) -> None:
    me = world.staff["partner_admin"]
    token = world.tokens["partner_admin"]
    for change in ({"role": "installer", "site_ids": [world.site_id]}, {"is_active": False}):
        response = await api.patch(f"/v1/staff/{me['id']}", token=token, json=change)
        assert response.status_code == 403
    assert (await api.delete(f"/v1/staff/{me['id']}", token=token)).status_code == 403


async def test_changing_a_managers_sites_changes_what_they_see(api: Api, world: World) -> None:
    manager = world.staff["site_manager"]
    token = world.tokens["site_manager"]
    assert (await api.get(f"/v1/sites/{world.other_site_id}", token=token)).status_code == 404
    await api.patch(
        f"/v1/staff/{manager['id']}",
        token=world.tokens["partner_admin"],
        json={"site_ids": [world.site_id, world.other_site_id]},
    )
    assert (await api.get(f"/v1/sites/{world.other_site_id}", token=token)).status_code == 200


async def test_site_staff_cannot_manage_staff(api: Api, world: World) -> None:
    for role in ("site_manager", "installer"):
        response = await api.get("/v1/staff", token=world.tokens[role])
        assert response.status_code == 403


async def test_changing_your_own_password_keeps_this_session(api: Api, world: World) -> None:
    me = world.staff["partner_admin"]
    elsewhere = (await api.login(me["email"], PASSWORD))["access_token"]
    token = world.tokens["partner_admin"]
    response = await api.patch(
        f"/v1/staff/{me['id']}", token=token, json={"password": "another long password"}
    )
    assert response.status_code == 200
    assert (await api.get("/v1/me", token=token)).status_code == 200
    assert (await api.get("/v1/me", token=elsewhere)).status_code == 401
