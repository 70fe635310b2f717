"""The OpenAPI document tells clients the rules the API applies: what it documents as
valid is accepted, what it refuses the document does not allow."""

from __future__ import annotations

import re
from typing import Any

from tests.support import Api, World


async def document(api: Api) -> dict[str, Any]:
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


def component(schema: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = schema["components"]["schemas"][name]
    return found


def allows(field: dict[str, Any], value: str) -> bool:
    """Whether a string field's documented constraints allow ``value``."""
    options = field.get("anyOf", [field])
    for option in options:
        if option.get("type") != "string":
            continue
        if "enum" in option and value not in option["enum"]:
            continue
        pattern = option.get("pattern")
        if pattern is not None and re.search(pattern, value) is None:
            continue
        if len(value) > option.get("maxLength", len(value)):
            continue
        return True
    return False


async def test_a_cursor_is_accepted_exactly_when_the_document_allows_it(
    api: Api, world: World
) -> None:
    schema = await document(api)
    [cursor] = [
        p for p in schema["paths"]["/v1/sites"]["get"]["parameters"] if p["name"] == "cursor"
    ]
    for value in ("A" * 22, "0123456789abcdef_-XYZw", "0" * 64, "A" * 21, "!" * 22):
        response = await api.get(
            "/v1/sites", token=world.tokens["partner_admin"], params={"cursor": value}
        )
        assert (response.status_code == 200) is allows(cursor["schema"], value), (
            value,
            response.text,
        )


async def test_validated_strings_are_documented_with_their_rule(api: Api) -> None:
    """Rules enforced by validators (times of day, language tags, preference categories,
    no NUL) appear in the document, so generated clients and fuzzers know them."""
    schema = await document(api)
    schedule = component(schema, "ScheduleIn")["properties"]
    assert allows(schedule["start"], "07:30")
    assert not allows(schedule["start"], "24:00")
    assert not allows(schedule["end"], "")
    assert schedule["weekdays"]["items"] == {"type": "integer", "minimum": 0, "maximum": 6}
    category = component(schema, "PreferenceIn")["properties"]["category"]
    assert allows(category, "doorbell")
    assert not allows(category, "weather")
    locale = component(schema, "PersonCreate")["properties"]["locale"]
    assert allows(locale, "ko-KR")
    assert not allows(locale, "")
    name = component(schema, "SiteCreate")["properties"]["name"]
    assert allows(name, "Gangnam Tower")
    assert not allows(name, "bad\u0000name")


async def test_a_ledger_range_past_its_end_is_an_empty_page(api: Api, world: World) -> None:
    """Entries ``start`` to ``end`` read like a slice: past the end, or ending before
    ``start``, there is nothing, which is no error."""
    token = world.tokens["partner_admin"]
    past = await api.get("/v1/ledger/entries", token=token, params={"start": 10**6})
    assert past.status_code == 200, past.text
    assert past.json()["entries"] == []
    backwards = await api.get("/v1/ledger/entries", token=token, params={"start": 5, "end": 2})
    assert backwards.status_code == 200, backwards.text
    assert backwards.json()["entries"] == []


async def test_numbers_are_neither_times_nor_booleans(api: Api, world: World) -> None:
    """The document says RFC 3339 and true/false; pydantic alone would read ``0.5`` as a
    time in 1970 and ``0`` as false."""
    token = world.tokens["partner_admin"]
    for path, params in (
        ("/v1/events", {"since": "0.5"}),
        ("/v1/access-events", {"since": "1700000000"}),
        ("/v1/households", {"active_on": "0"}),
    ):
        response = await api.get(path, token=token, params=params)
        assert response.status_code == 422, (path, response.text)
    staff_id = world.staff["site_manager"]["id"]
    response = await api.patch(f"/v1/staff/{staff_id}", token=token, json={"is_active": 0})
    assert response.status_code == 422, response.text
    account = await api.get(f"/v1/staff/{staff_id}", token=token)
    assert account.json()["is_active"] is True


async def test_updates_offer_null_only_where_a_field_may_be_null(api: Api, world: World) -> None:
    schema = await document(api)
    partner = component(schema, "PartnerUpdate")["properties"]["name"]
    assert "anyOf" not in partner
    assert partner["type"] == "string"
    response = await api.patch(
        f"/v1/partners/{world.partner_id}", token=world.tokens["partner_admin"], json={"name": None}
    )
    assert response.status_code == 422
    site = component(schema, "SiteUpdate")["properties"]["address"]
    assert {"type": "null"} in site["anyOf"]  # a site may have no address


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, by_method in schema["paths"].items()
        for method, operation in by_method.items()
    ]


async def test_an_optional_body_is_the_model_and_not_required(api: Api) -> None:
    """Not "the model or null": a generated client then sends no body when given none."""
    schema = await document(api)
    for path, model in (
        ("/v1/entrances/{entrance_id}/open", "OpenRequest"),
        ("/v1/me/credentials", "CredentialRequest"),
    ):
        body = schema["paths"][path]["post"]["requestBody"]
        assert body["required"] is False
        assert body["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{model}"
        }
    for _, path, operation in operations(schema):
        for media in operation.get("requestBody", {}).get("content", {}).values():
            assert {"type": "null"} not in media["schema"].get("anyOf", []), path


async def test_every_post_declares_the_idempotency_key(api: Api, world: World) -> None:
    schema = await document(api)
    posts = [(path, op) for method, path, op in operations(schema) if method == "post"]
    assert len(posts) > 30
    for path, operation in posts:
        [header] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header"
        assert header["required"] is False, path
    # What it documents is what the API accepts.
    [header] = [
        p
        for p in schema["paths"]["/v1/sites"]["post"]["parameters"]
        if p["name"] == "Idempotency-Key"
    ]
    token = world.tokens["partner_admin"]
    for key in ("k" * 255, "k" * 256, "with space"):
        response = await api.post(
            "/v1/sites", token=token, json={"name": key[:50]}, headers={"Idempotency-Key": key}
        )
        fits = len(key) <= header["schema"]["maxLength"] and re.search(
            header["schema"]["pattern"], key
        )
        assert (response.status_code == 201) is bool(fits), (key, response.text)


async def test_authenticated_operations_say_so(api: Api) -> None:
    """The ledger answers 401 without a credential under the default access: its
    operations declare the bearer scheme and that 401, like every other one."""
    schema = await document(api)
    for path in ("/v1/ledger", "/v1/ledger/checkpoint", "/v1/ledger/entries"):
        operation = schema["paths"][path]["get"]
        assert operation["security"] == [{"HTTPBearer": []}], path
        assert "401" in operation["responses"], path
        assert (await api.get(path)).status_code == 401
    public = [path for _, path, op in operations(schema) if not op.get("security")]
    assert sorted(public) == [
        "/healthz",
        "/metrics",
        "/readyz",
        "/v1/auth/codes",
        "/v1/auth/codes/verify",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/notifications/web-push-key",
        "/v1/passes/{token}",
        "/v1/time",
    ]


async def test_a_public_ledger_is_documented_as_open(database_url: str) -> None:
    from sesame.app import create_app
    from sesame.runtime import build_runtime
    from tests.conftest import test_settings

    runtime = build_runtime(test_settings(database_url, ledger_access="public"))
    try:
        schema = create_app(runtime=runtime).openapi()
    finally:
        await runtime.close()
    operation = schema["paths"]["/v1/ledger/checkpoint"]["get"]
    assert {} in operation["security"]
    assert {"HTTPBearer": []} in operation["security"]
    assert "401" not in operation["responses"]


async def test_text_and_images_have_schemas(api: Api) -> None:
    schema = await document(api)
    checkpoint = schema["paths"]["/v1/ledger/checkpoint"]["get"]["responses"]["200"]
    assert checkpoint["content"] == {"text/plain": {"schema": {"type": "string"}}}
    image = schema["paths"]["/v1/passes/{token}"]["get"]["responses"]["200"]["content"]
    for media in ("image/png", "image/svg+xml"):
        assert image[media]["schema"] == {"type": "string", "format": "binary"}
    links = schema["paths"]["/v1/keys/{object_id}/pass"]["get"]["responses"]["200"]
    assert links["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/GuestPass"
    }


async def test_operation_ids_are_identifiers(api: Api) -> None:
    ids = [op["operationId"] for _, _, op in operations(await document(api))]
    assert len(ids) == len(set(ids))
    assert [i for i in ids if not i.isidentifier()] == []
