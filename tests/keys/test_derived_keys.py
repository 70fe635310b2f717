"""A key given from another — a household member's share, a guest pass — never exceeds
it: not in entrances, window or schedule, not at the reader, and not after the parent is
suspended, shortened or revoked."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from sesame.keys import lifecycle
from tests.device_fixtures import Fleet
from tests.keys.test_keys_e2e import resident_key, resident_token, sign_in, wait_for_trust
from tests.support import unique_phone

WEEKDAYS_7_TO_22 = {"weekdays": [0, 1, 2, 3, 4], "start": "07:00", "end": "22:00"}


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return claims


def closed_22_minutes_ago(now: datetime, zone: ZoneInfo) -> dict[str, Any]:
    """A daily 15-hour schedule that closed 22 minutes ago on the site's clock: at 22:22
    under a 07:00–22:00 key, whatever the time the test runs."""
    local = now.astimezone(zone).replace(second=0, microsecond=0)
    end = local - timedelta(minutes=22)
    start = end - timedelta(hours=15)
    return {"weekdays": list(range(7)), "start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}


async def _patch_key(fleet: Fleet, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await fleet.api.patch(
        f"/v1/keys/{key_id}", token=fleet.world.tokens["partner_admin"], json=body
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def _key(fleet: Fleet, key_id: str) -> dict[str, Any]:
    response = await fleet.api.get(f"/v1/keys/{key_id}", token=fleet.world.tokens["partner_admin"])
    data: dict[str, Any] = response.json()
    return data


async def test_a_guest_pass_given_at_22_22_under_a_7_to_22_key_waits_for_7(
    fleet: Fleet,
) -> None:
    """Refused at 22:22 themselves, a resident cannot let a guest in then: the pass takes
    the key's schedule, and the reader refuses it until 07:00."""
    _, reader = await fleet.run("entrance_reader")
    await wait_for_trust(reader)
    key = await resident_key(fleet)
    hours = closed_22_minutes_ago(fleet.runtime.clock.now(), ZoneInfo("Asia/Seoul"))
    await _patch_key(fleet, key["id"], {"schedule": hours})
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    refused = await fleet.api.post(f"/v1/entrances/{fleet.world.ids['entrance']}/open", token=owner)
    assert refused.json().get("details", {}).get("reason") == "outside_schedule", refused.text

    created = await fleet.api.post(
        "/v1/me/guest-passes",
        token=owner,
        json={
            "entrance_id": fleet.world.ids["entrance"],
            "guest_name": "친구",
            "guest_phone": unique_phone(),
        },
    )
    assert created.status_code == 201, created.text
    guest = created.json()
    assert guest["key"]["schedule"] == hours
    assert guest["key"]["parent_key_id"] == key["id"]
    assert reader.present(guest["token"], method="qr").reason == "outside_schedule"
    reader.faults.clock_offset = 9 * 3600  # 07:22 the next morning
    try:
        assert reader.present(guest["token"], method="qr").granted
    finally:
        reader.faults.clock_offset = 0


async def test_a_pass_beyond_the_hosts_window_is_refused_and_a_longer_one_cut(
    fleet: Fleet,
) -> None:
    """A pass from day 30 to day 365 under a key ending in 2 days is a 422; one asked
    for 10 days ends with the key, and so does its QR token."""
    _, reader = await fleet.run("entrance_reader")
    await wait_for_trust(reader)
    key = await resident_key(fleet)
    now = fleet.runtime.clock.now()
    parent_end = (now + timedelta(days=2)).replace(microsecond=0)
    await _patch_key(fleet, key["id"], {"ends_at": parent_end.isoformat()})
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])

    async def ask(starts: datetime, ends: datetime) -> Any:
        return await fleet.api.post(
            "/v1/me/guest-passes",
            token=owner,
            json={
                "entrance_id": fleet.world.ids["entrance"],
                "guest_name": "손님",
                "guest_phone": unique_phone(),
                "starts_at": starts.isoformat(),
                "ends_at": ends.isoformat(),
            },
        )

    far = await ask(now + timedelta(days=30), now + timedelta(days=365))
    assert far.status_code == 422, far.text
    assert far.json()["type"] == "not_covered_by_parent"
    longer = await ask(now, now + timedelta(days=10))
    assert longer.status_code == 201, longer.text
    assert datetime.fromisoformat(longer.json()["key"]["ends_at"]) == parent_end
    assert claims_of(longer.json()["token"])["exp"] <= parent_end.timestamp()
    reader.faults.clock_offset = (parent_end - now).total_seconds() + 60
    assert reader.present(longer.json()["token"], method="qr").reason == "credential_expired"


async def test_a_shared_key_follows_its_parents_suspension_and_end(fleet: Fleet) -> None:
    """Suspending the parent suspends the shared key (and readers block it), resuming
    resumes it; shortening the parent shortens it; it cannot be stretched past it."""
    _, reader = await fleet.run("entrance_reader")
    await wait_for_trust(reader)
    key = await resident_key(fleet)
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    member_phone = unique_phone()
    shared = await fleet.api.post(
        f"/v1/me/keys/{key['id']}/share", token=owner, json={"phone": member_phone, "name": "가족"}
    )
    assert shared.status_code == 201, shared.text
    child_id = shared.json()["id"]
    member = await sign_in(fleet.api, fleet.runtime, member_phone)

    await _patch_key(fleet, key["id"], {"status": "suspended"})
    assert (await _key(fleet, child_id))["status"] == "suspended"
    await wait_for_trust(reader, lambda t: child_id in {str(k) for k in t.revoked_keys})
    refused = await fleet.api.post(
        f"/v1/entrances/{fleet.world.ids['entrance']}/open", token=member
    )
    assert refused.json()["details"]["reason"] == "key_suspended"
    own_resume = await fleet.api.patch(
        f"/v1/keys/{child_id}",
        token=fleet.world.tokens["partner_admin"],
        json={"status": "active"},
    )
    assert own_resume.status_code == 422, own_resume.text
    await _patch_key(fleet, key["id"], {"status": "active"})
    assert (await _key(fleet, child_id))["status"] == "active"

    parent_end = (fleet.runtime.clock.now() + timedelta(hours=3)).replace(microsecond=0)
    await _patch_key(fleet, key["id"], {"ends_at": parent_end.isoformat()})
    assert datetime.fromisoformat((await _key(fleet, child_id))["ends_at"]) == parent_end
    stretched = await fleet.api.patch(
        f"/v1/keys/{child_id}",
        token=fleet.world.tokens["partner_admin"],
        json={"ends_at": (parent_end + timedelta(days=1)).isoformat()},
    )
    assert stretched.status_code == 422
    assert stretched.json()["type"] == "not_covered_by_parent"
    issued = await fleet.api.post("/v1/me/credentials", token=member, json={"per_entrance": 1})
    assert issued.status_code == 200
    assert issued.json()
    assert all(claims_of(c["token"])["exp"] <= parent_end.timestamp() for c in issued.json())


async def test_a_share_asking_for_hours_outside_the_parents_is_refused(fleet: Fleet) -> None:
    """A schedule may narrow the parent's, never widen it."""
    key = await resident_key(fleet)
    await _patch_key(fleet, key["id"], {"schedule": WEEKDAYS_7_TO_22})
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    wider = await fleet.api.post(
        f"/v1/me/keys/{key['id']}/share",
        token=owner,
        json={
            "phone": unique_phone(),
            "name": "가족",
            "schedule": {"weekdays": [0, 1, 2, 3, 4, 5, 6], "start": "07:00", "end": "22:00"},
        },
    )
    assert wider.status_code == 422, wider.text
    assert wider.json()["type"] == "not_covered_by_parent"
    narrower = {"weekdays": [0, 2], "start": "09:00", "end": "18:00"}
    inside = await fleet.api.post(
        f"/v1/me/keys/{key['id']}/share",
        token=owner,
        json={"phone": unique_phone(), "name": "가족", "schedule": narrower},
    )
    assert inside.status_code == 201, inside.text
    assert inside.json()["schedule"] == narrower
    inherited = await fleet.api.post(
        f"/v1/me/keys/{key['id']}/share",
        token=owner,
        json={"phone": unique_phone(), "name": "가족"},
    )
    assert inherited.json()["schedule"] == WEEKDAYS_7_TO_22


async def test_a_shared_key_stops_with_its_parents_last_use(fleet: Fleet) -> None:
    """Once the parent's last use is spent, the shared key is refused at once, and the
    sweep that expires the parent expires it too."""
    await fleet.run("entrance_reader")
    key = await resident_key(fleet)
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    member_phone = unique_phone()
    shared = await fleet.api.post(
        f"/v1/me/keys/{key['id']}/share", token=owner, json={"phone": member_phone, "name": "가족"}
    )
    assert shared.status_code == 201, shared.text
    member = await sign_in(fleet.api, fleet.runtime, member_phone)
    await _patch_key(fleet, key["id"], {"max_uses": 1})
    entrance = f"/v1/entrances/{fleet.world.ids['entrance']}/open"
    opened = await fleet.api.post(entrance, token=owner, params={"wait": 5})
    assert opened.status_code == 201, opened.text
    refused = await fleet.api.post(entrance, token=member)
    assert refused.status_code == 403, refused.text
    assert refused.json()["details"]["reason"] == "uses_exhausted"
    await lifecycle.advance(fleet.runtime)
    assert (await _key(fleet, key["id"]))["status"] == "expired"
    child = await _key(fleet, shared.json()["id"])
    assert child["status"] == "expired"
    assert child["ends_at"] is not None
