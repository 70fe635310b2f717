"""Staff sign-in: argon2 passwords, short-lived access tokens, rotating refresh tokens."""

from __future__ import annotations

from sqlalchemy import select

from sesame.kit.db import write_intent
from sesame.kit.security import PasswordHashing
from sesame.models import RefreshToken, StaffAccount
from sesame.runtime import Runtime
from tests.support import PASSWORD, Api, World


async def test_passwords_are_stored_as_argon2_hashes(world: World, runtime: Runtime) -> None:
    async with runtime.session_factory() as session:
        staff = (
            await session.execute(
                select(StaffAccount).where(StaffAccount.email == world.staff["installer"]["email"])
            )
        ).scalar_one()
    assert staff.password_hash.startswith("$argon2id$")
    assert PASSWORD not in staff.password_hash


async def test_a_hash_made_at_another_cost_signs_in_and_is_redone(
    api: Api, world: World, runtime: Runtime
) -> None:
    """An installation that changes its argon2 cost keeps every password working; each is
    rehashed at the new cost when its owner next signs in."""
    email = world.staff["installer"]["email"]
    older = PasswordHashing(time_cost=2, memory_kib=256)
    with write_intent():  # SQLite's writers take turns
        async with runtime.session_factory() as session:
            staff = (
                await session.execute(select(StaffAccount).where(StaffAccount.email == email))
            ).scalar_one()
            staff.password_hash = await older.hash(PASSWORD)
            await session.commit()
    assert "m=256,t=2" in staff.password_hash
    assert runtime.passwords.needs_rehash(staff.password_hash)

    wrong = await api.post("/v1/auth/login", json={"email": email, "password": "not it at all"})
    assert wrong.status_code == 401
    async with runtime.session_factory() as session:
        kept = await session.get(StaffAccount, staff.id)
        assert kept is not None
        assert kept.password_hash == staff.password_hash

    await api.login(email, PASSWORD)
    async with runtime.session_factory() as session:
        redone = await session.get(StaffAccount, staff.id)
    assert redone is not None
    assert redone.password_hash.startswith("$argon2id$")
    settings = runtime.settings
    cost = f"m={settings.password_memory_kib},t={settings.password_time_cost}"
    assert cost in redone.password_hash
    assert not runtime.passwords.needs_rehash(redone.password_hash)
    assert await runtime.passwords.verify(redone.password_hash, PASSWORD)


async def test_login_returns_a_token_pair(api: Api, world: World) -> None:
    tokens = await api.login(world.staff["installer"]["email"], PASSWORD)
    assert tokens["token_type"] == "bearer"
    assert 0 < tokens["expires_in"] <= 900
    assert tokens["refresh_expires_in"] > tokens["expires_in"]
    me = await api.get("/v1/me", token=tokens["access_token"])
    assert me.json()["kind"] == "staff"
    assert me.json()["role"] == "installer"
    assert me.json()["site_ids"] == [world.site_id]


async def test_wrong_password_and_unknown_account_look_the_same(api: Api, world: World) -> None:
    wrong = await api.post(
        "/v1/auth/login",
        json={"email": world.staff["installer"]["email"], "password": "not the password"},
    )
    unknown = await api.post(
        "/v1/auth/login", json={"email": "nobody@nowhere.test", "password": "not the password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["type"] == unknown.json()["type"] == "invalid_credentials"
    assert wrong.json()["message"] == unknown.json()["message"]


async def test_repeated_failures_are_rate_limited_per_account(
    api: Api, world: World, runtime: Runtime
) -> None:
    """Past the limit even the right password is refused until the window passes."""
    email = world.staff["site_manager"]["email"]
    limit = runtime.settings.login_attempts_per_account
    for _ in range(limit):
        response = await api.post("/v1/auth/login", json={"email": email, "password": "nope"})
        assert response.status_code == 401
    blocked = await api.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert blocked.status_code == 429
    assert blocked.json()["type"] == "rate_limited"
    assert int(blocked.headers["retry-after"]) >= 1
    runtime.clock.advance(runtime.settings.rate_limit_window_seconds)  # type: ignore[attr-defined]
    assert (
        await api.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    ).status_code == 200


async def test_refresh_rotates_and_reuse_ends_the_session(api: Api, world: World) -> None:
    first = await api.login(world.staff["installer"]["email"], PASSWORD)
    second = await api.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert (await api.get("/v1/me", token=rotated["access_token"])).status_code == 200

    replay = await api.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    # The reuse ended the session: its newest tokens stop working too.
    assert (await api.get("/v1/me", token=rotated["access_token"])).status_code == 401
    assert (
        await api.post("/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    ).status_code == 401


async def test_refresh_tokens_are_stored_as_digests(
    api: Api, world: World, runtime: Runtime
) -> None:
    tokens = await api.login(world.staff["installer"]["email"], PASSWORD)
    async with runtime.session_factory() as session:
        digests = (await session.execute(select(RefreshToken.token_digest))).scalars().all()
    assert tokens["refresh_token"] not in digests


async def test_logout_ends_the_session_at_once(api: Api, world: World) -> None:
    tokens = await api.login(world.staff["installer"]["email"], PASSWORD)
    assert (await api.get("/v1/me", token=tokens["access_token"])).status_code == 200
    assert (await api.post("/v1/auth/logout", token=tokens["access_token"])).status_code == 204
    assert (await api.get("/v1/me", token=tokens["access_token"])).status_code == 401
    refresh = await api.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401


async def test_access_tokens_expire(api: Api, world: World, runtime: Runtime) -> None:
    token = world.tokens["installer"]
    runtime.clock.advance(runtime.settings.access_token_ttl_seconds + 1)  # type: ignore[attr-defined]
    response = await api.get("/v1/me", token=token)
    assert response.status_code == 401
    assert response.json()["type"] == "token_expired"


async def test_tampered_token_is_refused(api: Api, world: World) -> None:
    token = world.tokens["installer"]
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    assert (await api.get("/v1/me", token=forged)).status_code == 401
    assert (await api.get("/v1/me", headers={"Authorization": "Basic abc"})).status_code == 401
