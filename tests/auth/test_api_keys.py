"""Partner API keys: shown once, stored as digests, scoped, revocable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy import select

from sesame.models import ApiKey
from sesame.runtime import Runtime
from tests.support import Api, World, unique


async def test_key_is_shown_once_and_stored_as_a_digest(
    api: Api, world: World, runtime: Runtime
) -> None:
    created = await api.create(
        "/v1/api-keys", world.tokens["partner_admin"], {"name": "pms", "scopes": ["sites:read"]}
    )
    assert created["key"].startswith("ses_" + created["prefix"] + "_")
    again = await api.get(f"/v1/api-keys/{created['id']}", token=world.tokens["partner_admin"])
    assert "key" not in again.json()
    async with runtime.session_factory() as session:
        row = (
            await session.execute(select(ApiKey).where(ApiKey.id == UUID(again.json()["id"])))
        ).scalar_one()
    secret = created["key"].split("_", 2)[2]
    assert secret not in row.secret_digest


async def test_scopes_limit_what_a_key_may_do(api: Api, world: World) -> None:
    key = (
        await api.create(
            "/v1/api-keys",
            world.tokens["partner_admin"],
            {"name": "reader", "scopes": ["sites:read"]},
        )
    )["key"]
    assert (await api.get("/v1/sites", token=key)).status_code == 200
    write = await api.post("/v1/sites", token=key, json={"name": unique("Nope")})
    assert write.status_code == 403
    assert (await api.get("/v1/people", token=key)).status_code == 403
    assert (await api.get("/v1/api-keys", token=key)).status_code == 403


async def test_unknown_scope_is_refused(api: Api, world: World) -> None:
    response = await api.post(
        "/v1/api-keys",
        token=world.tokens["partner_admin"],
        json={"name": "x", "scopes": ["everything"]},
    )
    assert response.status_code == 422


async def test_revoked_key_stops_working_at_once(api: Api, world: World) -> None:
    created = await api.create(
        "/v1/api-keys", world.tokens["partner_admin"], {"name": "temp", "scopes": ["sites:read"]}
    )
    assert (await api.get("/v1/sites", token=created["key"])).status_code == 200
    revoke = await api.delete(f"/v1/api-keys/{created['id']}", token=world.tokens["partner_admin"])
    assert revoke.status_code == 204
    assert (await api.get("/v1/sites", token=created["key"])).status_code == 401
    listed = await api.get(
        "/v1/api-keys", token=world.tokens["partner_admin"], params={"revoked": True}
    )
    assert created["id"] in [k["id"] for k in listed.json()["items"]]


async def test_key_works_until_it_expires(api: Api, world: World, runtime: Runtime) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = await api.create(
        "/v1/api-keys",
        world.tokens["partner_admin"],
        {"name": "short", "scopes": ["sites:read"], "expires_at": later},
    )
    assert (await api.get("/v1/sites", token=created["key"])).status_code == 200
    runtime.clock.advance(timedelta(hours=2))  # type: ignore[attr-defined]
    assert (await api.get("/v1/sites", token=created["key"])).status_code == 401


async def test_malformed_and_forged_keys_are_refused(api: Api, world: World) -> None:
    real = world.tokens["api_key"]
    forged = real[:-4] + ("AAAA" if real[-4:] != "AAAA" else "BBBB")
    for credential in ("ses_", "ses_short", forged, "ses_000000000000_secret"):
        response = await api.get("/v1/sites", token=credential)
        assert response.status_code == 401, credential


async def test_key_sees_its_own_description(api: Api, world: World) -> None:
    me = await api.get("/v1/me", token=world.tokens["api_key"])
    assert me.json()["kind"] == "api_key"
    assert me.json()["partner_id"] == world.partner_id
