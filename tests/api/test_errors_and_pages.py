"""One error shape everywhere; bad input is a 4xx, never a 500; lists page by cursor."""

from __future__ import annotations

import uuid

from tests.support import Api, World


def assert_error_shape(body: dict[str, object], status: int, type_: str) -> None:
    assert body["status"] == status
    assert body["type"] == type_
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["request_id"], str)
    assert body["request_id"]


async def test_unknown_route_uses_the_error_shape(api: Api) -> None:
    response = await api.get("/v1/nothing-here")
    assert response.status_code == 404
    assert_error_shape(response.json(), 404, "route_not_found")


async def test_wrong_method_uses_the_error_shape(api: Api) -> None:
    response = await api.request("PUT", "/v1/sites")
    assert response.status_code == 405
    assert_error_shape(response.json(), 405, "method_not_allowed")


async def test_allow_names_every_method_the_path_serves(api: Api) -> None:
    """A 405's ``Allow`` lists all the path's methods, not those of one of its routes."""
    collection = await api.request("OPTIONS", "/v1/sites")
    assert collection.status_code == 405
    assert collection.headers["allow"] == "GET, POST"
    item = await api.request("PUT", f"/v1/sites/{uuid.uuid4()}")
    assert item.status_code == 405
    assert item.headers["allow"] == "DELETE, GET, PATCH"


async def test_a_word_where_an_id_goes_names_no_id_route(api: Api, world: World) -> None:
    """``/v1/pin-codes/generate`` serves POST only: another method there is a 405, not a
    validation error about an object id."""
    token = world.tokens["partner_admin"]
    for method in ("GET", "PATCH", "DELETE"):
        response = await api.request(method, "/v1/pin-codes/generate", token=token, json={})
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "POST"


async def test_malformed_json_is_a_422(api: Api, world: World) -> None:
    response = await api.post(
        "/v1/sites",
        token=world.tokens["partner_admin"],
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert_error_shape(response.json(), 422, "validation_error")


async def test_validation_errors_name_each_field(api: Api, world: World) -> None:
    response = await api.post(
        "/v1/units",
        token=world.tokens["partner_admin"],
        json={"building_id": "not-a-uuid", "floor": "x", "extra": 1},
    )
    body = response.json()
    assert response.status_code == 422
    paths = {tuple(e["path"]) for e in body["errors"]}
    assert {
        ("body", "building_id"),
        ("body", "floor"),
        ("body", "name"),
        ("body", "extra"),
    } <= paths
    assert all(e["code"] and e["message"] for e in body["errors"])


async def test_a_validators_message_comes_without_pydantics_prefix(api: Api, world: World) -> None:
    response = await api.post(
        "/v1/keys",
        token=world.tokens["partner_admin"],
        json={
            "person_id": world.ids["person"],
            "kind": "staff",
            "site_id": world.site_id,
            "starts_at": "2031-01-02T00:00:00Z",
            "ends_at": "2031-01-01T00:00:00Z",
        },
    )
    assert response.status_code == 422
    messages = [e["message"] for e in response.json()["errors"]]
    assert "ends_at must be after starts_at" in messages
    assert not any(m.startswith(("Value error", "Assertion failed")) for m in messages)


async def test_bad_ids_in_queries_are_422_and_in_paths_404(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    not_an_id = await api.get("/v1/sites/123", token=token)
    assert not_an_id.status_code == 404
    assert_error_shape(not_an_id.json(), 404, "route_not_found")
    assert (await api.get("/v1/units", token=token, params={"building_id": "x"})).status_code == 422
    assert (await api.get("/v1/units", token=token, params={"limit": 0})).status_code == 422
    assert (await api.get("/v1/units", token=token, params={"limit": 201})).status_code == 422
    unknown_filter = await api.get("/v1/units", token=token, params={"colour": "red"})
    assert unknown_filter.status_code == 422


async def test_unknown_id_is_a_404(api: Api, world: World) -> None:
    response = await api.get(f"/v1/sites/{uuid.uuid4()}", token=world.tokens["partner_admin"])
    assert response.status_code == 404
    assert_error_shape(response.json(), 404, "not_found")


async def test_invalid_cursor_is_a_field_error(api: Api, world: World) -> None:
    response = await api.get(
        "/v1/sites", token=world.tokens["partner_admin"], params={"cursor": "!!!"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == ["query", "cursor"]


async def test_unauthenticated_requests_are_401_with_a_challenge(api: Api) -> None:
    response = await api.get("/v1/sites")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert_error_shape(response.json(), 401, "unauthorized")


async def test_cursor_pagination_walks_every_item_once(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    created = [
        (
            await api.create(
                "/v1/units",
                token,
                {"building_id": world.ids["building"], "name": f"{n}05호", "floor": n},
            )
        )["id"]
        for n in range(1, 8)
    ]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"building_id": world.ids["building"], "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/v1/units", token=token, params=params)).json()
        seen += [u["id"] for u in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = [world.ids["unit"], *created]
    assert seen == sorted(expected)
    assert pages == 3


async def test_request_id_is_echoed_or_made(api: Api) -> None:
    given = await api.get("/healthz", headers={"X-Request-ID": "req-abc-123"})
    assert given.headers["x-request-id"] == "req-abc-123"
    made = await api.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["x-request-id"] != "bad id with spaces"
    assert len(made.headers["x-request-id"]) == 32


async def test_nul_characters_are_refused_as_input_errors(api: Api, world: World) -> None:
    """PostgreSQL cannot store NUL in text; it must be a 422, never a 500."""
    token = world.tokens["partner_admin"]
    body = await api.post("/v1/sites", token=token, json={"name": "bad\u0000name"})
    assert body.status_code == 422
    assert body.json()["errors"][0]["path"] == ["body", "name"]
    query = await api.get("/v1/staff", token=token, params={"email": "a\u0000b"})
    assert query.status_code == 422
    login = await api.post("/v1/auth/login", json={"email": "a@b.test", "password": "x\u0000y"})
    assert login.status_code == 422


async def test_an_unknown_query_parameter_is_refused_on_every_route(api: Api, world: World) -> None:
    """Lists refuse a filter they do not have; so does every other route, rather than
    answering as if the parameter were not there."""
    token = world.tokens["partner_admin"]
    key_id = world.ids["key"]
    for method, path, params in (
        ("GET", "/v1/sites", {"colour": "red"}),
        ("GET", f"/v1/keys/{key_id}", {"expand": "person"}),
        ("GET", "/v1/ledger/entries", {"start": "0", "limit": "5"}),
        ("POST", f"/v1/entrances/{world.ids['entrance']}/open", {"wiat": "5"}),
        ("GET", "/v1/passes/a.b.c", {"image": "svg"}),
    ):
        response = await api.request(method, path, token=token, params=params)
        assert response.status_code == 422, (path, response.text)
        unknown = [name for name in params if name not in {"start"}]
        assert [e["path"] for e in response.json()["errors"]] == [
            ["query", name] for name in unknown
        ], (path, response.text)
    assert (await api.get("/v1/passes/a.b.c", params={"format": "svg"})).status_code == 200
