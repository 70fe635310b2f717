"""GET by id runs its own handler (no per-request dependency solving): it must answer
exactly as the rest of the API does, refusals included."""

from __future__ import annotations

import uuid

from tests.api.test_errors_and_pages import assert_error_shape
from tests.support import Api, World


async def test_an_object_reads_as_the_list_shows_it(api: Api, world: World) -> None:
    token = world.tokens["api_key"]
    listed = await api.get("/v1/sites", token=token)
    assert listed.status_code == 200
    by_id = {item["id"]: item for item in listed.json()["items"]}
    response = await api.get(f"/v1/sites/{world.site_id}", token=token)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    assert response.json() == by_id[world.site_id]
    unit = await api.get(f"/v1/units/{world.ids['unit']}", token=world.tokens["partner_admin"])
    assert unit.status_code == 200
    assert unit.json()["id"] == world.ids["unit"]


async def test_another_tenants_object_is_not_found(
    api: Api, world: World, other_world: World
) -> None:
    response = await api.get(f"/v1/sites/{other_world.site_id}", token=world.tokens["api_key"])
    assert response.status_code == 404
    assert_error_shape(response.json(), 404, "not_found")
    missing = await api.get(f"/v1/sites/{uuid.uuid4()}", token=world.tokens["api_key"])
    assert missing.status_code == 404
    assert_error_shape(missing.json(), 404, "not_found")


async def test_credentials_are_still_required(api: Api, world: World) -> None:
    anonymous = await api.get(f"/v1/sites/{world.site_id}")
    assert anonymous.status_code == 401
    assert_error_shape(anonymous.json(), 401, "unauthorized")
    wrong = await api.get(f"/v1/sites/{world.site_id}", token="ses_000000000000_nope")
    assert wrong.status_code == 401
    assert_error_shape(wrong.json(), 401, "unauthorized")
    # An installer may read sites but not people: a 403, as before.
    person = await api.get(f"/v1/people/{world.ids['person']}", token=world.tokens["installer"])
    assert person.status_code == 403
    assert_error_shape(person.json(), 403, "forbidden")
