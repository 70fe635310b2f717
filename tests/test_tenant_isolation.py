"""Tenant isolation, for every resource and every role.

Another partner's object is a 404 on read, update and delete, and never appears in a
list; for staff scoped to sites, so is an object of their partner's other sites. A role
that may not touch a kind of resource at all gets 403.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support import PASSWORD, Api, World, unique, unique_phone

# resource -> (path, a harmless PATCH body)
RESOURCES = {
    "partner": ("/v1/partners", {"name": "renamed"}),
    "site": ("/v1/sites", {"address": "elsewhere"}),
    "building": ("/v1/buildings", {"floor_count": 20}),
    "unit": ("/v1/units", {"floor": 2}),
    "entrance": ("/v1/entrances", {"name": "renamed"}),
    "person": ("/v1/people", {"name": "renamed"}),
    "household": ("/v1/households", {"role": "member"}),
    "staff_account": ("/v1/staff", {"name": "renamed"}),
    "api_key": ("/v1/api-keys", {"name": "renamed"}),
    "device": ("/v1/devices", {"name": "renamed"}),
    "key": ("/v1/keys", {"name": "renamed"}),
    "pin_code": ("/v1/pin-codes", {"name": "renamed"}),
}
ROLES = ("partner_admin", "site_manager", "installer", "api_key")

# What each role may do with each resource of its own scope: "rw", "r" or "" (403).
ALLOWED = {
    "partner_admin": dict.fromkeys(RESOURCES, "rw"),
    "site_manager": {
        "partner": "r",
        "site": "rw",
        "building": "rw",
        "unit": "rw",
        "entrance": "rw",
        "person": "rw",
        "household": "rw",
        "staff_account": "",
        "api_key": "",
        "device": "rw",
        "key": "rw",
        "pin_code": "rw",
    },
    "installer": {
        "partner": "r",
        "site": "r",
        "building": "r",
        "unit": "r",
        "entrance": "r",
        "person": "",
        "household": "",
        "staff_account": "",
        "api_key": "",
        "device": "rw",
        "key": "",
        "pin_code": "",
    },
    "api_key": {
        "partner": "rw",
        "site": "rw",
        "building": "rw",
        "unit": "rw",
        "entrance": "rw",
        "person": "rw",
        "household": "rw",
        "staff_account": "",
        "api_key": "",
        "device": "rw",
        "key": "rw",
        "pin_code": "rw",
    },
}


def _denied_status(role: str, resource: str, action: str = "r") -> int:
    """Another tenant's object: 404 where the role may do ``action`` ("r" or "w") to the
    kind at all, else 403 (decided before any lookup, so it reveals nothing either)."""
    return 404 if action in ALLOWED[role][resource] else 403


@pytest.mark.parametrize("role", ROLES)
async def test_another_partners_objects_are_invisible(
    api: Api, world: World, other_world: World, role: str
) -> None:
    token = world.tokens[role]
    for resource, (path, patch) in RESOURCES.items():
        foreign_id = other_world.ids[resource]
        read = await api.get(f"{path}/{foreign_id}", token=token)
        assert read.status_code == _denied_status(role, resource), (role, resource, read.text)
        update = await api.patch(f"{path}/{foreign_id}", token=token, json=patch)
        assert update.status_code == _denied_status(role, resource, "w"), (role, resource)
        delete = await api.delete(f"{path}/{foreign_id}", token=token)
        assert delete.status_code == _denied_status(role, resource, "w"), (role, resource)
        listed = await api.get(path, token=token, params={"limit": 200})
        if "r" in ALLOWED[role][resource]:
            assert listed.status_code == 200
            ids = {item["id"] for item in listed.json()["items"]}
            assert foreign_id not in ids, (role, resource)
        else:
            assert listed.status_code == 403, (role, resource)
    # The other partner's objects are all still there.
    for resource, (path, _) in RESOURCES.items():
        owner = other_world.tokens["partner_admin"]
        assert (
            await api.get(f"{path}/{other_world.ids[resource]}", token=owner)
        ).status_code == 200, resource


@pytest.mark.parametrize("role", ["site_manager", "installer"])
async def test_site_staff_see_only_their_sites(api: Api, world: World, role: str) -> None:
    token = world.tokens[role]
    for resource in (
        "site",
        "building",
        "unit",
        "entrance",
        "person",
        "household",
        "device",
        "key",
        "pin_code",
    ):
        path = RESOURCES[resource][0]
        foreign_id = world.other_site_ids[resource]
        expected = _denied_status(role, resource)
        assert (await api.get(f"{path}/{foreign_id}", token=token)).status_code == expected
        if "r" in ALLOWED[role][resource]:
            own = await api.get(f"{path}/{world.ids[resource]}", token=token)
            assert own.status_code == 200, (role, resource)
            listed = await api.get(path, token=token, params={"limit": 200})
            ids = {item["id"] for item in listed.json()["items"]}
            assert world.ids[resource] in ids, (role, resource)
            assert foreign_id not in ids, (role, resource)


@pytest.mark.parametrize("role", ROLES)
async def test_roles_get_403_for_what_they_may_not_touch(api: Api, world: World, role: str) -> None:
    token = world.tokens[role]
    for resource, (path, patch) in RESOURCES.items():
        allowed = ALLOWED[role][resource]
        own_id = world.ids[resource]
        if not allowed:
            assert (await api.get(f"{path}/{own_id}", token=token)).status_code == 403
        elif "w" not in allowed:
            response = await api.patch(f"{path}/{own_id}", token=token, json=patch)
            assert response.status_code == 403, (role, resource)


async def test_platform_admin_sees_every_partner(
    api: Api, world: World, other_world: World, admin_token: str
) -> None:
    for resource, (path, _) in RESOURCES.items():
        for w in (world, other_world):
            response = await api.get(f"{path}/{w.ids[resource]}", token=admin_token)
            assert response.status_code == 200, resource


async def test_references_to_another_partners_objects_are_not_found(
    api: Api, world: World, other_world: World
) -> None:
    """Creating a child under another tenant's parent is the same 404 as an unknown id."""
    token = world.tokens["partner_admin"]
    cases = [
        ("/v1/buildings", {"site_id": other_world.site_id, "name": "X동"}),
        ("/v1/units", {"building_id": other_world.ids["building"], "name": "X", "floor": 1}),
        ("/v1/entrances", {"site_id": other_world.site_id, "name": "X"}),
        ("/v1/households", {"person_id": world.ids["person"], "unit_id": other_world.ids["unit"]}),
        ("/v1/sites", {"partner_id": other_world.partner_id, "name": "X"}),
    ]
    for path, body in cases:
        response = await api.post(path, token=token, json=body)
        assert response.status_code == 404, (path, response.text)


# -- references: ids inside bodies and filters -------------------------------------------

# What an id field names, by its name.
REFERENCED = {
    "partner_id": "partner",
    "site_id": "site",
    "site_ids": "site",
    "building_id": "building",
    "unit_id": "unit",
    "entrance_id": "entrance",
    "person_id": "person",
    "device_id": "device",
    "key_id": "key",
}
# Body fields not checked here, and why.
UNCHECKED_BODY_FIELDS = {
    # A resident's own request: their keys decide what exists (tests/keys).
    ("POST", "/v1/me/guest-passes", "entrance_id"),
}
# List filters naming objects kept out of this world (checked by their own tests).
UNCHECKED_FILTERS = {("GET", "/v1/notifications/deliveries", "campaign_id")}
KEY_TARGETS = ("site_id", "building_id", "unit_id", "entrance_id")


def _id_fields(app: Any) -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str]]]:
    """Every id a request body or a list filter takes, from the OpenAPI document: what
    the tests below must cover (a new one fails them until it is)."""
    document = app.openapi()
    schemas = document["components"]["schemas"]
    bodies, filters = set(), set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema", {})
            refs = [schema.get("$ref")] + [s.get("$ref") for s in schema.get("anyOf", [])]
            for ref in filter(None, refs):
                for name in schemas[ref.rsplit("/", 1)[-1]].get("properties", {}):
                    if name in REFERENCED or name.endswith(("_id", "_ids")):
                        bodies.add((method.upper(), path, name))
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["name"].endswith("_id"):
                    filters.add((method.upper(), path, parameter["name"]))
    return bodies, filters


def _template(path: str) -> str:
    return "/".join(
        "{object_id}" if len(p) == 36 and p.count("-") == 4 else p for p in path.split("/")
    )


async def _reference_cases(api: Api, world: World) -> dict[tuple[str, str, str], Any]:
    """For each id field: the request (method, path, body) made with the world's own
    objects, as a function of the id under test."""
    ids, admin = world.ids, world.tokens["partner_admin"]
    pin = (await api.get(f"/v1/pin-codes/{ids['pin_code']}", token=admin)).json()
    lock = pin["device_id"]

    def post(path: str, base: dict[str, Any], field: str, drop: tuple[str, ...] = ()) -> Any:
        def make(value: str) -> tuple[str, str, dict[str, Any]]:
            body = {k: v for k, v in base.items() if k not in drop}
            body[field] = [value] if field.endswith("_ids") else value
            return "POST", path, body

        return make

    def patch(path: str, field: str) -> Any:
        def make(value: str) -> tuple[str, str, dict[str, Any]]:
            return "PATCH", path, {field: [value] if field.endswith("_ids") else value}

        return make

    person = {
        "phone": unique_phone(),
        "name": "X",
        "site_id": ids["site"],
        "partner_id": ids["partner"],
    }
    staff = {
        "email": f"{unique('ref')}@partner.test",
        "name": "X",
        "role": "site_manager",
        "password": PASSWORD,
        "partner_id": ids["partner"],
        "site_ids": [ids["site"]],
    }
    entrance = {"site_id": ids["site"], "name": "X", "building_id": ids["building"]}
    reader = {
        "site_id": ids["site"],
        "kind": "entrance_reader",
        "name": "X",
        "entrance_id": ids["entrance"],
    }
    unit_lock = {"site_id": ids["site"], "kind": "door_lock", "name": "X", "unit_id": ids["unit"]}
    key = {"person_id": ids["person"], "kind": "staff", "site_id": ids["site"]}
    pin_body = {"device_id": lock, "key_id": ids["key"], "person_id": ids["person"]}
    campaign = {
        "site_id": ids["site"],
        "building_id": ids["building"],
        "content": {"ko": {"title": "공지", "body": "내용"}},
    }
    cases: dict[tuple[str, str, str], Any] = {
        ("POST", "/v1/sites", "partner_id"): post("/v1/sites", {"name": unique("S")}, "partner_id"),
        ("POST", "/v1/buildings", "site_id"): post("/v1/buildings", {"name": "X동"}, "site_id"),
        ("POST", "/v1/units", "building_id"): post(
            "/v1/units", {"name": unique("U"), "floor": 1}, "building_id"
        ),
        ("POST", "/v1/people", "partner_id"): post("/v1/people", person, "partner_id"),
        ("POST", "/v1/people", "site_id"): post("/v1/people", person, "site_id"),
        ("POST", "/v1/households", "person_id"): post(
            "/v1/households", {"unit_id": ids["unit"], "role": "member"}, "person_id"
        ),
        ("POST", "/v1/households", "unit_id"): post(
            "/v1/households", {"person_id": ids["person"], "role": "member"}, "unit_id"
        ),
        ("POST", "/v1/staff", "partner_id"): post("/v1/staff", staff, "partner_id"),
        ("POST", "/v1/staff", "site_ids"): post("/v1/staff", staff, "site_ids"),
        ("POST", "/v1/api-keys", "partner_id"): post(
            "/v1/api-keys", {"name": "X", "scopes": ["keys:read"]}, "partner_id"
        ),
        ("POST", "/v1/devices", "site_id"): post("/v1/devices", reader, "site_id"),
        ("POST", "/v1/devices", "entrance_id"): post("/v1/devices", reader, "entrance_id"),
        ("POST", "/v1/devices", "unit_id"): post("/v1/devices", unit_lock, "unit_id"),
        ("POST", "/v1/pin-codes", "device_id"): post("/v1/pin-codes", pin_body, "device_id"),
        ("POST", "/v1/pin-codes", "key_id"): post("/v1/pin-codes", pin_body, "key_id"),
        ("POST", "/v1/pin-codes", "person_id"): post("/v1/pin-codes", pin_body, "person_id"),
        ("POST", "/v1/pin-codes/generate", "device_id"): post(
            "/v1/pin-codes/generate", {}, "device_id"
        ),
        ("POST", "/v1/notifications/campaigns", "site_id"): post(
            "/v1/notifications/campaigns", campaign, "site_id", drop=("building_id",)
        ),
        ("POST", "/v1/notifications/campaigns", "building_id"): post(
            "/v1/notifications/campaigns", campaign, "building_id"
        ),
        ("POST", "/v1/webhook-endpoints", "partner_id"): post(
            "/v1/webhook-endpoints", {"url": "https://hooks.example/x"}, "partner_id"
        ),
        ("PATCH", "/v1/entrances/{object_id}", "building_id"): patch(
            f"/v1/entrances/{ids['entrance']}", "building_id"
        ),
        ("PATCH", "/v1/entrances/{object_id}", "unit_id"): patch(
            f"/v1/entrances/{ids['entrance']}", "unit_id"
        ),
        ("PATCH", "/v1/people/{object_id}", "site_id"): patch(
            f"/v1/people/{ids['person']}", "site_id"
        ),
        ("PATCH", "/v1/staff/{object_id}", "site_ids"): patch(
            f"/v1/staff/{ids['staff_account']}", "site_ids"
        ),
        ("PATCH", "/v1/devices/{object_id}", "entrance_id"): patch(
            f"/v1/devices/{ids['device']}", "entrance_id"
        ),
        ("PATCH", "/v1/devices/{object_id}", "unit_id"): patch(
            f"/v1/devices/{ids['device']}", "unit_id"
        ),
    }
    for field in ("site_id", "building_id", "unit_id"):
        cases[("POST", "/v1/entrances", field)] = post(
            "/v1/entrances", entrance, field, drop=("unit_id",) if field != "unit_id" else ()
        )
    for field in ("person_id", *KEY_TARGETS):
        others = tuple(t for t in KEY_TARGETS if t != field) if field != "person_id" else ()
        cases[("POST", "/v1/keys", field)] = post("/v1/keys", key, field, drop=others)
    return cases


async def test_every_id_in_a_body_is_resolved_in_the_callers_scope(
    app: Any, api: Api, world: World, other_world: World
) -> None:
    """Another partner's object named in a body is a 404, exactly like an id that does
    not exist — for every id field of every create and update body."""
    bodies, _ = _id_fields(app)
    cases = await _reference_cases(api, world)
    assert bodies - UNCHECKED_BODY_FIELDS == set(cases), "an id field without a case"
    token = world.tokens["partner_admin"]
    for (method, template, field), make in sorted(cases.items()):
        kind = REFERENCED[field]
        foreign = other_world.ids[kind]
        for value, label in ((foreign, "another partner's"), (str(uuid.uuid4()), "unknown")):
            verb, path, body = make(value)
            response = await api.request(verb, path, token=token, json=body)
            assert response.status_code == 404, (method, template, field, label, response.text)


async def test_every_id_filter_hides_another_partners_objects(
    app: Any, api: Api, world: World, other_world: World
) -> None:
    """A list filtered by another partner's object answers as for an unknown id: the
    same status and nothing of theirs."""
    _, filters = _id_fields(app)
    token = world.tokens["partner_admin"]
    for method, path, name in sorted(filters - UNCHECKED_FILTERS):
        assert method == "GET", path
        assert name in REFERENCED, (path, name)
        foreign = other_world.ids[REFERENCED[name]]
        answers = []
        for value in (foreign, str(uuid.uuid4())):
            response = await api.get(path, token=token, params={name: value})
            answers.append(response.status_code)
            if response.status_code == 200:
                assert response.json()["items"] == [], (path, name, response.text)
        assert answers[0] == answers[1], (path, name, answers)
        assert answers[0] in (200, 404), (path, name, answers)
