"""Dates and times from outside: every endpoint that takes one answers a naive, distant
or oddly offset value with a 422 naming the field — never a 5xx.

Instants must carry a UTC offset and fall in the years 2000 to 2199 (``kit.types``);
dates too. The property test draws values over the whole range Python can parse (years
1 to 9999, any offset or none) for every such field the OpenAPI document lists.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sesame.runtime import Runtime
from tests.keys.test_keys_e2e import resident_token
from tests.support import Api, World, unique_phone

Request = tuple[str, str, dict[str, Any]]  # method, path, {"json": ...} or {"params": ...}

OFFSETS = st.timedeltas(
    min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
).map(lambda d: timezone(timedelta(minutes=int(d.total_seconds() // 60))))
INSTANTS = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.none() | OFFSETS,
).map(datetime.isoformat)
DAYS = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)).map(date.isoformat)

# (method, path template, field) -> date or date-time: every one the API takes.
FIELDS = {
    ("POST", "/v1/households", "move_in_on"): "date",
    ("POST", "/v1/households", "move_out_on"): "date",
    ("PATCH", "/v1/households/{object_id}", "move_in_on"): "date",
    ("PATCH", "/v1/households/{object_id}", "move_out_on"): "date",
    ("GET", "/v1/households", "active_on"): "date",
    ("POST", "/v1/api-keys", "expires_at"): "date-time",
    ("GET", "/v1/events", "since"): "date-time",
    ("POST", "/v1/keys", "starts_at"): "date-time",
    ("POST", "/v1/keys", "ends_at"): "date-time",
    ("PATCH", "/v1/keys/{object_id}", "starts_at"): "date-time",
    ("PATCH", "/v1/keys/{object_id}", "ends_at"): "date-time",
    ("POST", "/v1/me/keys/{key_id}/share", "starts_at"): "date-time",
    ("POST", "/v1/me/keys/{key_id}/share", "ends_at"): "date-time",
    ("POST", "/v1/me/guest-passes", "starts_at"): "date-time",
    ("POST", "/v1/me/guest-passes", "ends_at"): "date-time",
    ("POST", "/v1/pin-codes", "starts_at"): "date-time",
    ("POST", "/v1/pin-codes", "ends_at"): "date-time",
    ("PATCH", "/v1/pin-codes/{object_id}", "starts_at"): "date-time",
    ("PATCH", "/v1/pin-codes/{object_id}", "ends_at"): "date-time",
    ("GET", "/v1/access-events", "since"): "date-time",
    ("POST", "/v1/notifications/campaigns", "send_at"): "date-time",
}


def _format(schema: dict[str, Any]) -> str | None:
    options = [schema, *schema.get("anyOf", [])]
    return next((o["format"] for o in options if o.get("format") in ("date", "date-time")), None)


def test_every_date_and_time_input_is_covered(app: Any) -> None:
    """The cases below are every date or time a body or a query takes."""
    document = app.openapi()
    schemas = document["components"]["schemas"]
    found = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            body = content.get("application/json", {}).get("schema", {})
            refs = [body.get("$ref")] + [s.get("$ref") for s in body.get("anyOf", [])]
            for ref in filter(None, refs):
                for name, prop in schemas[ref.rsplit("/", 1)[-1]].get("properties", {}).items():
                    if kind := _format(prop):
                        found[(method.upper(), path, name)] = kind
            for parameter in operation.get("parameters", []):
                if kind := _format(parameter.get("schema", {})):
                    found[(method.upper(), path, parameter["name"])] = kind
    assert found == FIELDS


async def _requests(
    api: Api, world: World, runtime: Runtime
) -> dict[tuple[str, str, str], Callable[[str], Request]]:
    ids, admin = world.ids, world.tokens["partner_admin"]
    lock = (await api.get(f"/v1/pin-codes/{ids['pin_code']}", token=admin)).json()["device_id"]
    await api.patch(f"/v1/sites/{ids['site']}", token=admin, json={"max_shared_keys_per_unit": 50})
    mover = await api.create(
        "/v1/people", admin, {"phone": unique_phone(), "name": "이사", "site_id": ids["site"]}
    )
    moving = await api.create(
        "/v1/households",
        admin,
        {"person_id": mover["id"], "unit_id": ids["unit"], "role": "member"},
    )
    resident = await resident_token(api, runtime, world, ids["person"])
    guest = {"entrance_id": ids["entrance"], "guest_name": "손님", "guest_phone": unique_phone()}

    def body(method: str, path: str, base: dict[str, Any], field: str) -> Callable[[str], Request]:
        return lambda value: (method, path, {"json": {**base, field: value}})

    def query(path: str, field: str) -> Callable[[str], Request]:
        return lambda value: ("GET", path, {"params": {field: value}})

    household = {"unit_id": ids["unit"], "role": "member"}
    key = {"person_id": ids["person"], "kind": "staff", "site_id": ids["site"]}
    requests: dict[tuple[str, str, str], Callable[[str], Request]] = {}
    for field in ("move_in_on", "move_out_on"):
        requests[("POST", "/v1/households", field)] = lambda value, field=field: (
            "POST",
            "/v1/households",
            {"json": {**household, field: value, "person_id": ids["person"]}},
        )
        requests[("PATCH", "/v1/households/{object_id}", field)] = body(
            "PATCH", f"/v1/households/{moving['id']}", {}, field
        )
    for field in ("starts_at", "ends_at"):
        requests[("POST", "/v1/keys", field)] = body("POST", "/v1/keys", key, field)
        requests[("PATCH", "/v1/keys/{object_id}", field)] = body(
            "PATCH", f"/v1/keys/{ids['key']}", {}, field
        )
        requests[("POST", "/v1/me/keys/{key_id}/share", field)] = body(
            "POST",
            f"/v1/me/keys/{ids['key']}/share",
            {"phone": unique_phone(), "name": "가족"},
            field,
        )
        requests[("POST", "/v1/me/guest-passes", field)] = body(
            "POST", "/v1/me/guest-passes", guest, field
        )
        requests[("POST", "/v1/pin-codes", field)] = body(
            "POST", "/v1/pin-codes", {"device_id": lock}, field
        )
        requests[("PATCH", "/v1/pin-codes/{object_id}", field)] = body(
            "PATCH", f"/v1/pin-codes/{ids['pin_code']}", {}, field
        )
    requests[("GET", "/v1/households", "active_on")] = query("/v1/households", "active_on")
    requests[("GET", "/v1/events", "since")] = query("/v1/events", "since")
    requests[("GET", "/v1/access-events", "since")] = query("/v1/access-events", "since")
    requests[("POST", "/v1/api-keys", "expires_at")] = body(
        "POST", "/v1/api-keys", {"name": "X", "scopes": ["keys:read"]}, "expires_at"
    )
    requests[("POST", "/v1/notifications/campaigns", "send_at")] = body(
        "POST",
        "/v1/notifications/campaigns",
        {"site_id": ids["site"], "content": {"ko": {"title": "공지", "body": "내용"}}},
        "send_at",
    )
    tokens = dict.fromkeys((f"/v1/me/keys/{ids['key']}/share", "/v1/me/guest-passes"), resident)
    return {case: _signed(make, tokens, admin) for case, make in requests.items()}


def _signed(
    make: Callable[[str], Request], tokens: dict[str, str], admin: str
) -> Callable[[str], Request]:
    def request(value: str) -> Request:
        method, path, kwargs = make(value)
        return method, path, {**kwargs, "token": tokens.get(path, admin)}

    return request


@pytest.fixture
async def requests(
    api: Api, world: World, runtime: Runtime
) -> dict[tuple[str, str, str], Callable[[str], Request]]:
    return await _requests(api, world, runtime)


@pytest.mark.parametrize("case", sorted(FIELDS))
@settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
@example(data=None)
async def test_no_date_or_time_gives_a_5xx(
    api: Api,
    requests: dict[tuple[str, str, str], Callable[[str], Request]],
    case: tuple[str, str, str],
    data: Any,
) -> None:
    """Whatever the value, the answer is a success or a clear 4xx."""
    strategy = DAYS if FIELDS[case] == "date" else INSTANTS
    values = EDGES[FIELDS[case]] if data is None else [data.draw(strategy)]
    for value in values:
        method, path, kwargs = requests[case](value)
        response = await api.request(method, path, **kwargs)
        assert response.status_code < 500, (case, value, response.text)
        if response.status_code >= 400:
            assert response.json()["type"], response.text  # a clear JSON error


EDGES = {
    "date-time": [
        "2026-05-01T09:00:00",
        "0001-01-01T00:00:00+00:00",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59+00:00",
        "9999-12-31T23:59:59-14:00",
        "2199-12-31T23:59:59-14:00",
    ],
    "date": ["0001-01-01", "9999-12-31", "2199-12-31"],
}


async def test_the_five_reported_inputs_are_422s(api: Api, world: World) -> None:
    """Naive times in key and PIN updates, years 1 and 9999 in a key's window and the
    largest ``since`` once answered 500."""
    admin = world.tokens["partner_admin"]
    naive = "2026-05-01T09:00:00"
    cases = [
        ("PATCH", f"/v1/keys/{world.ids['key']}", {"json": {"ends_at": naive}}),
        ("PATCH", f"/v1/pin-codes/{world.ids['pin_code']}", {"json": {"starts_at": naive}}),
        (
            "POST",
            "/v1/keys",
            {
                "json": {
                    "person_id": world.ids["person"],
                    "kind": "staff",
                    "site_id": world.site_id,
                    "starts_at": "0001-01-01T00:00:00+00:00",
                }
            },
        ),
        (
            "POST",
            "/v1/keys",
            {
                "json": {
                    "person_id": world.ids["person"],
                    "kind": "staff",
                    "site_id": world.site_id,
                    "ends_at": "9999-12-31T23:59:59+00:00",
                }
            },
        ),
        ("GET", "/v1/access-events", {"params": {"since": "9999-12-31T23:59:59-14:00"}}),
    ]
    for method, path, kwargs in cases:
        response = await api.request(method, path, token=admin, **kwargs)
        assert response.status_code == 422, (method, path, response.text)
        assert response.json()["type"] == "validation_error"
