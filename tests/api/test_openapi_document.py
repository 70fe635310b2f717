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
