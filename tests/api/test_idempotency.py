"""``Idempotency-Key`` on POST: retries replay the stored answer and never redo the work."""

from __future__ import annotations

import asyncio

from tests.support import Api, World, unique, unique_phone


async def test_same_key_and_body_replays_the_stored_answer(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    body = {"name": unique("Idem"), "address": "somewhere"}
    headers = {"Idempotency-Key": unique("key")}
    first = await api.post("/v1/sites", token=token, json=body, headers=headers)
    second = await api.post("/v1/sites", token=token, json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["location"] == first.headers["location"]
    listed = await api.get("/v1/sites", token=token, params={"q": body["name"]})
    assert len(listed.json()["items"]) == 1


async def test_same_key_with_another_body_is_an_error(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    headers = {"Idempotency-Key": unique("key")}
    await api.post("/v1/sites", token=token, json={"name": unique("A")}, headers=headers)
    other = await api.post("/v1/sites", token=token, json={"name": unique("B")}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"] == "idempotency_key_reused"


async def test_keys_belong_to_their_caller(api: Api, world: World) -> None:
    """Two callers using the same key do not see each other's answers."""
    headers = {"Idempotency-Key": unique("shared")}
    body = {"phone": unique_phone(), "name": "Same"}
    mine = await api.post(
        "/v1/people", token=world.tokens["partner_admin"], json=body, headers=headers
    )
    theirs = await api.post(
        "/v1/people",
        token=world.tokens["api_key"],
        json={**body, "phone": unique_phone()},
        headers=headers,
    )
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert "idempotent-replayed" not in theirs.headers


async def test_concurrent_retries_create_one_object(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    body = {"phone": unique_phone(), "name": "Racer"}
    headers = {"Idempotency-Key": unique("race")}
    responses = await asyncio.gather(
        *(api.post("/v1/people", token=token, json=body, headers=headers) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    listed = await api.get("/v1/people", token=token, params={"phone": body["phone"]})
    assert len(listed.json()["items"]) == 1


async def test_failed_requests_are_not_stored(api: Api, world: World) -> None:
    """A refusal is not remembered: the corrected retry with the same key goes through."""
    token = world.tokens["partner_admin"]
    headers = {"Idempotency-Key": unique("fail")}
    name = unique("Retry")
    bad = await api.post(
        "/v1/buildings",
        token=token,
        json={"site_id": world.site_id, "name": name, "floor_count": 0},
        headers=headers,
    )
    assert bad.status_code == 422
    good = await api.post(
        "/v1/buildings",
        token=token,
        json={"site_id": world.site_id, "name": name, "floor_count": 3},
        headers=headers,
    )
    assert good.status_code == 201


async def test_key_must_be_printable_and_short(api: Api, world: World) -> None:
    for key in ("x" * 256, "tab\there"):
        response = await api.post(
            "/v1/sites",
            token=world.tokens["partner_admin"],
            json={"name": unique("K")},
            headers={"Idempotency-Key": key},
        )
        assert response.status_code == 400, key


async def test_api_key_creation_replays_the_secret_it_showed(api: Api, world: World) -> None:
    """The one answer that carries a secret is replayed intact (it is stored sealed)."""
    token = world.tokens["partner_admin"]
    headers = {"Idempotency-Key": unique("apikey")}
    body = {"name": "replayed", "scopes": ["sites:read"]}
    first = await api.post("/v1/api-keys", token=token, json=body, headers=headers)
    second = await api.post("/v1/api-keys", token=token, json=body, headers=headers)
    assert first.json()["key"] == second.json()["key"]
    assert (await api.get("/v1/sites", token=second.json()["key"])).status_code == 200
