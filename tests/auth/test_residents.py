"""Residents sign in with a one-time code sent by SMS and reach only their own data."""

from __future__ import annotations

from uuid import UUID

import jwt
from sqlalchemy import select

from sesame.auth.sms import MemorySmsSender
from sesame.auth.tokens import issue_access_token
from sesame.models import OtpChallenge
from sesame.runtime import Runtime
from tests.support import Api, World, sms_code, unique_phone


def code_from(sms: MemorySmsSender, phone: str) -> str:
    return sms_code(sms, phone)


async def resident_phone(api: Api, world: World) -> str:
    person = (
        await api.get(f"/v1/people/{world.ids['person']}", token=world.tokens["partner_admin"])
    ).json()
    return str(person["phone"])


async def sign_in(api: Api, sms: MemorySmsSender, phone: str) -> dict[str, object]:
    assert (await api.post("/v1/auth/codes", json={"phone": phone})).status_code == 202
    response = await api.post(
        "/v1/auth/codes/verify", json={"phone": phone, "code": code_from(sms, phone)}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_resident_signs_in_and_sees_own_households(
    api: Api, world: World, sms: MemorySmsSender
) -> None:
    phone = await resident_phone(api, world)
    tokens = await sign_in(api, sms, phone)
    me = (await api.get("/v1/me", token=str(tokens["access_token"]))).json()
    assert me["kind"] == "resident"
    assert me["phone"] == phone
    assert [p["id"] for p in me["people"]] == [world.ids["person"]]
    assert [h["id"] for h in me["households"]] == [world.ids["household"]]
    households = await api.get("/v1/me/households", token=str(tokens["access_token"]))
    assert [h["unit_id"] for h in households.json()] == [world.ids["unit"]]


async def test_resident_token_reaches_no_management_endpoint(
    api: Api, world: World, sms: MemorySmsSender
) -> None:
    tokens = await sign_in(api, sms, await resident_phone(api, world))
    token = str(tokens["access_token"])
    for path in (
        "/v1/people",
        f"/v1/people/{world.ids['person']}",
        "/v1/households",
        f"/v1/households/{world.other_site_ids['household']}",
        "/v1/sites",
        "/v1/staff",
        "/v1/api-keys",
        "/v1/partners",
    ):
        response = await api.get(path, token=token)
        assert response.status_code == 403, path


async def test_resident_token_refreshes_like_staff_tokens(
    api: Api, world: World, sms: MemorySmsSender
) -> None:
    tokens = await sign_in(api, sms, await resident_phone(api, world))
    refreshed = await api.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    me = await api.get("/v1/me", token=refreshed.json()["access_token"])
    assert me.json()["kind"] == "resident"


async def test_a_resident_token_names_an_opaque_id_and_old_phone_tokens_are_refused(
    api: Api, world: World, sms: MemorySmsSender, runtime: Runtime
) -> None:
    phone = await resident_phone(api, world)
    tokens = await sign_in(api, sms, phone)
    access = str(tokens["access_token"])
    claims = jwt.decode(access, options={"verify_signature": False})
    assert phone not in access
    assert phone.lstrip("+") not in str(claims)
    assert claims["sub"].startswith("r_")
    again = await sign_in(api, sms, phone)
    assert (
        jwt.decode(str(again["access_token"]), options={"verify_signature": False})["sub"]
        == claims["sub"]
    )  # stable across sign-ins
    # A token of the earlier form, naming the phone, for the same live session: refused.
    old, _ = issue_access_token(
        runtime.keys.access_tokens,
        kind="resident",
        subject=phone,
        session_id=UUID(claims["sid"]),
        now=runtime.clock.now(),
        ttl_seconds=600,
    )
    assert (await api.get("/v1/me", token=old)).status_code == 401
    assert (await api.get("/v1/me", token=access)).status_code == 200
    # The session's refresh token still works, and gives a token of the new form.
    refreshed = await api.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    renewed = refreshed.json()["access_token"]
    assert jwt.decode(renewed, options={"verify_signature": False})["sub"] == claims["sub"]
    assert (await api.get("/v1/me", token=renewed)).json()["phone"] == phone


async def test_codes_are_stored_as_keyed_digests(
    api: Api, world: World, sms: MemorySmsSender, runtime: Runtime
) -> None:
    phone = await resident_phone(api, world)
    await api.post("/v1/auth/codes", json={"phone": phone})
    code = code_from(sms, phone)
    async with runtime.session_factory() as session:
        stored = (
            (await session.execute(select(OtpChallenge).where(OtpChallenge.phone == phone)))
            .scalars()
            .all()
        )
    assert stored
    assert all(code not in row.code_digest for row in stored)


async def test_unknown_phone_gets_the_same_answer_and_no_sms(
    api: Api, sms: MemorySmsSender
) -> None:
    phone = unique_phone()
    response = await api.post("/v1/auth/codes", json={"phone": phone})
    assert response.status_code == 202
    assert sms.last_to(phone) is None
    guess = await api.post("/v1/auth/codes/verify", json={"phone": phone, "code": "123456"})
    assert guess.status_code == 401


async def test_codes_expire(api: Api, world: World, sms: MemorySmsSender, runtime: Runtime) -> None:
    phone = await resident_phone(api, world)
    await api.post("/v1/auth/codes", json={"phone": phone})
    code = code_from(sms, phone)
    runtime.clock.advance(runtime.settings.otp_ttl_seconds + 1)  # type: ignore[attr-defined]
    response = await api.post("/v1/auth/codes/verify", json={"phone": phone, "code": code})
    assert response.status_code == 401


async def test_five_wrong_codes_burn_the_code(
    api: Api, world: World, sms: MemorySmsSender, runtime: Runtime
) -> None:
    phone = await resident_phone(api, world)
    await api.post("/v1/auth/codes", json={"phone": phone})
    code = code_from(sms, phone)
    wrong = "000000" if code != "000000" else "111111"
    for attempt in range(runtime.settings.otp_max_attempts):
        response = await api.post("/v1/auth/codes/verify", json={"phone": phone, "code": wrong})
        assert response.status_code == 401
        assert response.json()["details"]["attempts_remaining"] == (
            runtime.settings.otp_max_attempts - attempt - 1
        )
    right = await api.post("/v1/auth/codes/verify", json={"phone": phone, "code": code})
    assert right.status_code == 401


async def test_a_code_works_once(api: Api, world: World, sms: MemorySmsSender) -> None:
    phone = await resident_phone(api, world)
    await api.post("/v1/auth/codes", json={"phone": phone})
    code = code_from(sms, phone)
    first = await api.post("/v1/auth/codes/verify", json={"phone": phone, "code": code})
    second = await api.post("/v1/auth/codes/verify", json={"phone": phone, "code": code})
    assert (first.status_code, second.status_code) == (200, 401)


async def test_code_requests_are_rate_limited_per_phone(
    api: Api, world: World, runtime: Runtime
) -> None:
    phone = await resident_phone(api, world)
    for _ in range(runtime.settings.otp_requests_per_phone):
        assert (await api.post("/v1/auth/codes", json={"phone": phone})).status_code == 202
    refused = await api.post("/v1/auth/codes", json={"phone": phone})
    assert refused.status_code == 429
    assert "retry-after" in refused.headers


async def test_code_requests_are_rate_limited_per_address(api: Api, runtime: Runtime) -> None:
    for _ in range(runtime.settings.otp_requests_per_address):
        assert (await api.post("/v1/auth/codes", json={"phone": unique_phone()})).status_code == 202
    assert (await api.post("/v1/auth/codes", json={"phone": unique_phone()})).status_code == 429


async def test_sms_outage_is_a_503_not_a_500(api: Api, world: World, sms: MemorySmsSender) -> None:
    phone = await resident_phone(api, world)
    sms.fail = True
    try:
        response = await api.post("/v1/auth/codes", json={"phone": phone})
    finally:
        sms.fail = False
    assert response.status_code == 503
    assert response.json()["type"] == "service_unavailable"
