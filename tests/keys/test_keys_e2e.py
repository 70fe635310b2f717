"""Keys end to end, with simulated devices on a real broker: remote opens, offline
credentials, guest passes, household sharing, move-out, and the access log."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from sesame.auth.sms import MemorySmsSender
from sesame.devices.lifecycle import embedded_broker
from tests.device_fixtures import Fleet
from tests.support import Api, World, eventually, sms_code, unique_phone


async def resident_token(api: Api, runtime: Any, world: World, person_id: str) -> str:
    person = (await api.get(f"/v1/people/{person_id}", token=world.tokens["partner_admin"])).json()
    return await sign_in(api, runtime, person["phone"])


async def sign_in(api: Api, runtime: Any, phone: str) -> str:
    sms: MemorySmsSender = runtime.sms_sender
    assert (await api.post("/v1/auth/codes", json={"phone": phone})).status_code == 202
    code = sms_code(sms, phone)
    tokens = await api.post("/v1/auth/codes/verify", json={"phone": phone, "code": code})
    assert tokens.status_code == 200, tokens.text
    return str(tokens.json()["access_token"])


async def resident_key(fleet: Fleet) -> dict[str, Any]:
    keys = await fleet.api.get(
        "/v1/keys",
        token=fleet.world.tokens["partner_admin"],
        params={"person_id": fleet.world.ids["person"]},
    )
    [key] = keys.json()["items"]
    return dict(key)


async def access_log(fleet: Fleet, **params: Any) -> list[dict[str, Any]]:
    response = await fleet.api.get(
        "/v1/access-events", token=fleet.world.tokens["partner_admin"], params=params
    )
    return list(response.json()["items"])


async def test_move_in_grants_a_resident_key_to_the_unit(fleet: Fleet) -> None:
    key = await resident_key(fleet)
    assert key["kind"] == "resident"
    assert key["status"] == "active"
    assert key["target_kind"] == "unit"
    assert key["unit_id"] == fleet.world.ids["unit"]
    assert key["household_id"] == fleet.world.ids["household"]


async def test_a_resident_opens_the_entrance_remotely(fleet: Fleet) -> None:
    _, reader = await fleet.run("entrance_reader")
    token = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    response = await fleet.api.post(
        f"/v1/entrances/{fleet.world.ids['entrance']}/open", token=token, params={"wait": 5}
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "success"
    assert len(reader.executed) == 1
    [entry] = await access_log(fleet, entrance_id=fleet.world.ids["entrance"])
    key = await resident_key(fleet)
    assert entry["result"] == "granted"
    assert entry["method"] == "remote"
    assert entry["key_id"] == key["id"]
    assert entry["action_attempt_id"] == response.json()["id"]
    assert key["uses_count"] == 1


async def test_a_partners_open_is_in_the_access_log(fleet: Fleet) -> None:
    """An open asked for with an API key (or by staff) is logged like a resident's: who
    asked, which door, which attempt carried it — with no key or person behind it."""
    device, reader = await fleet.run("entrance_reader")
    response = await fleet.api.post(
        f"/v1/entrances/{fleet.world.ids['entrance']}/open",
        token=fleet.world.tokens["api_key"],
        params={"wait": 5},
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "success"
    [entry] = await access_log(fleet, entrance_id=fleet.world.ids["entrance"])
    assert (entry["result"], entry["method"]) == ("granted", "remote")
    assert entry["action_attempt_id"] == response.json()["id"]
    assert entry["device_id"] == device["id"]
    assert (entry["key_id"], entry["person_id"]) == (None, None)
    # The reader's own report of the release (method "remote") is not logged twice.
    await eventually(lambda: len(reader.acked_events) >= 1)
    assert len(await access_log(fleet, entrance_id=fleet.world.ids["entrance"])) == 1


async def test_a_key_or_pass_that_would_already_be_over_is_refused(fleet: Fleet) -> None:
    admin = fleet.world.tokens["partner_admin"]
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    key = await fleet.api.post(
        "/v1/keys",
        token=admin,
        json={
            "person_id": fleet.world.ids["person"],
            "kind": "staff",
            "site_id": fleet.world.site_id,
            "ends_at": past,
        },
    )
    assert key.status_code == 422, key.text
    assert [(e["path"], e["code"]) for e in key.json()["errors"]] == [
        (["body", "ends_at"], "in_the_past")
    ]
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    start = datetime.now(UTC) - timedelta(hours=3)
    late = await guest_pass(fleet, owner, "늦은", start, start + timedelta(hours=1))
    assert late.status_code == 422, late.text
    assert late.json()["errors"][0]["code"] == "in_the_past"
    listed = await fleet.api.get(
        "/v1/keys", token=admin, params={"person_id": fleet.world.ids["person"]}
    )
    assert [k["kind"] for k in listed.json()["items"]] == ["resident"]  # nothing stored


async def test_a_guest_pass_needs_the_guests_phone(fleet: Fleet) -> None:
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    response = await fleet.api.post(
        "/v1/me/guest-passes",
        token=owner,
        json={"entrance_id": fleet.world.ids["entrance"], "guest_name": "친구"},
    )
    assert response.status_code == 422, response.text
    assert [(e["path"], e["code"]) for e in response.json()["errors"]] == [
        (["body", "guest_phone"], "missing")
    ]


async def test_refusals_are_logged_with_their_reason(fleet: Fleet) -> None:
    await fleet.run("entrance_reader")
    key = await resident_key(fleet)
    suspended = await fleet.api.patch(
        f"/v1/keys/{key['id']}",
        token=fleet.world.tokens["site_manager"],
        json={"status": "suspended"},
    )
    assert suspended.json()["status"] == "suspended"
    token = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    refused = await fleet.api.post(f"/v1/entrances/{fleet.world.ids['entrance']}/open", token=token)
    assert refused.status_code == 403
    assert refused.json()["type"] == "access_denied"
    assert refused.json()["details"]["reason"] == "key_suspended"
    [entry] = await access_log(fleet, result="denied")
    assert entry["reason"] == "key_suspended"
    # An entrance of a site where the resident holds no key does not exist for them.
    other = await fleet.api.post(
        f"/v1/entrances/{fleet.world.other_site_ids['entrance']}/open", token=token
    )
    assert other.status_code == 404  # no key at all at that site: it is not revealed
    resumed = await fleet.api.patch(
        f"/v1/keys/{key['id']}", token=fleet.world.tokens["site_manager"], json={"status": "active"}
    )
    assert resumed.json()["status"] == "active"


async def test_a_schedule_limits_when_a_key_opens(fleet: Fleet) -> None:
    await fleet.run("entrance_reader")
    courier_phone = unique_phone()
    courier = await fleet.api.create(
        "/v1/people",
        fleet.world.tokens["partner_admin"],
        {"phone": courier_phone, "name": "택배", "kind": "courier"},
    )
    now_seoul = datetime.now(UTC) + timedelta(hours=9)
    closed_day = (now_seoul.weekday() + 3) % 7
    key = await fleet.api.create(
        "/v1/keys",
        fleet.world.tokens["partner_admin"],
        {
            "person_id": courier["id"],
            "kind": "courier",
            "carrier": "CJ Logistics",
            "building_id": fleet.world.ids["building"],
            "schedule": {"weekdays": [closed_day], "start": "09:00", "end": "18:00"},
        },
    )
    token = await sign_in(fleet.api, fleet.runtime, courier_phone)
    refused = await fleet.api.post(f"/v1/entrances/{fleet.world.ids['entrance']}/open", token=token)
    assert refused.status_code == 403
    assert refused.json()["details"]["reason"] == "outside_schedule"
    always = await fleet.api.patch(
        f"/v1/keys/{key['id']}",
        token=fleet.world.tokens["partner_admin"],
        json={"schedule": {"weekdays": [0, 1, 2, 3, 4, 5, 6], "start": "00:00", "end": "00:00"}},
    )
    assert always.status_code == 200
    opened = await fleet.api.post(
        f"/v1/entrances/{fleet.world.ids['entrance']}/open", token=token, params={"wait": 5}
    )
    assert opened.json()["status"] == "success"
    [granted] = await access_log(fleet, key_id=key["id"], result="granted")
    assert granted["person_id"] == courier["id"]


async def test_move_out_revokes_every_key_of_that_person_at_that_unit(fleet: Fleet) -> None:
    await fleet.run("entrance_reader")
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    key = await resident_key(fleet)
    shared = await fleet.api.post(
        f"/v1/me/keys/{key['id']}/share",
        token=owner,
        json={"phone": unique_phone(), "name": "가족"},
    )
    assert shared.status_code == 201
    today = datetime.now(UTC).date().isoformat()
    moved = await fleet.api.patch(
        f"/v1/households/{fleet.world.ids['household']}",
        token=fleet.world.tokens["site_manager"],
        json={"move_out_on": today},
    )
    assert moved.status_code == 200
    gone = (
        await fleet.api.get(f"/v1/keys/{key['id']}", token=fleet.world.tokens["partner_admin"])
    ).json()
    assert gone["status"] == "revoked"
    assert gone["revoked_reason"] == "moved_out"
    child = (
        await fleet.api.get(
            f"/v1/keys/{shared.json()['id']}", token=fleet.world.tokens["partner_admin"]
        )
    ).json()
    assert child["status"] == "revoked"
    refused = await fleet.api.post(f"/v1/entrances/{fleet.world.ids['entrance']}/open", token=owner)
    assert refused.status_code == 403
    assert refused.json()["details"]["reason"] == "key_revoked"


async def test_household_sharing_obeys_the_site_policy(fleet: Fleet) -> None:
    admin = fleet.world.tokens["partner_admin"]
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    key = await resident_key(fleet)
    await fleet.api.patch(
        f"/v1/sites/{fleet.world.site_id}",
        token=admin,
        json={"max_shared_keys_per_unit": 1, "sharing_roles": ["owner"]},
    )
    first = await fleet.api.post(
        f"/v1/me/keys/{key['id']}/share",
        token=owner,
        json={"phone": unique_phone(), "name": "배우자"},
    )
    assert first.status_code == 201
    assert first.json()["kind"] == "household"
    assert first.json()["unit_id"] == fleet.world.ids["unit"]
    second = await fleet.api.post(
        f"/v1/me/keys/{key['id']}/share",
        token=owner,
        json={"phone": unique_phone(), "name": "아이"},
    )
    assert second.status_code == 409
    assert second.json()["type"] == "sharing_limit_reached"
    # A member (not an owner) may not share at this site.
    member_phone = unique_phone()
    member = await fleet.api.create(
        "/v1/people",
        admin,
        {"phone": member_phone, "name": "member", "site_id": fleet.world.site_id},
    )
    await fleet.api.create(
        "/v1/households",
        admin,
        {"person_id": member["id"], "unit_id": fleet.world.ids["unit"], "role": "member"},
    )
    member_token = await sign_in(fleet.api, fleet.runtime, member_phone)
    member_keys = (await fleet.api.get("/v1/me/keys", token=member_token)).json()
    member_key = next(k for k in member_keys if k["kind"] == "resident")
    refused = await fleet.api.post(
        f"/v1/me/keys/{member_key['id']}/share",
        token=member_token,
        json={"phone": unique_phone(), "name": "friend"},
    )
    assert refused.status_code == 403
    assert refused.json()["type"] == "sharing_not_allowed"
    # The owner takes the shared key back; it is revoked at once.
    taken = await fleet.api.delete(f"/v1/me/keys/{first.json()['id']}", token=owner)
    assert taken.status_code == 204
    again = await fleet.api.post(
        f"/v1/me/keys/{key['id']}/share",
        token=owner,
        json={"phone": unique_phone(), "name": "아이"},
    )
    assert again.status_code == 201


async def wait_for_trust(reader: Any, predicate: Any = lambda t: True) -> None:
    for _ in range(200):
        if reader.trust is not None and predicate(reader.trust):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"trust not received: {reader.trust}")


async def test_an_offline_reader_decides_alone(fleet: Fleet, broker_kind: str) -> None:
    _, reader = await fleet.run("entrance_reader")
    await wait_for_trust(reader)
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    issued = await fleet.api.post("/v1/me/credentials", token=owner, json={"per_entrance": 3})
    assert issued.status_code == 200
    mine = [c for c in issued.json() if c["entrance_id"] == fleet.world.ids["entrance"]]
    assert len(mine) == 3
    tokens = [c["token"] for c in mine]

    await _stop_broker(fleet, broker_kind)
    try:
        assert reader.present(tokens[0]).granted
        assert reader.relay.on
        replay = reader.present(tokens[0])
        assert (replay.granted, replay.reason) == (False, "replayed")
        forged = tokens[1][:-4] + ("AAAA" if not tokens[1].endswith("AAAA") else "BBBB")
        assert reader.present(forged).reason == "invalid_signature"
        reader.faults.clock_offset = 2 * 86400
        assert reader.present(tokens[1]).reason == "credential_expired"
        reader.faults.clock_offset = 0
    finally:
        await _start_broker(fleet, broker_kind)
    async with asyncio.timeout(30):
        await reader.connected.wait()

    key = await resident_key(fleet)
    revoked = await fleet.api.delete(
        f"/v1/keys/{key['id']}", token=fleet.world.tokens["partner_admin"]
    )
    assert revoked.status_code == 204
    await wait_for_trust(reader, lambda t: key["id"] in {str(k) for k in t.revoked_keys})
    assert reader.present(tokens[2]).reason == "key_revoked"
    # The reader's own decisions reached the access log once the broker was back.
    for _ in range(100):
        offline = await access_log(fleet, method="mobile_credential")
        if len(offline) >= 5:
            break
        await asyncio.sleep(0.1)
    results = sorted((e["result"], e["reason"] or "") for e in offline)
    assert ("granted", "") in results
    assert ("denied", "replayed") in results
    assert ("denied", "key_revoked") in results


async def _stop_broker(fleet: Fleet, broker_kind: str) -> None:
    if broker_kind == "embedded":
        await fleet.runtime.broker.stop()
    else:
        await asyncio.to_thread(fleet.runtime.test_mosquitto.stop)  # type: ignore[attr-defined]


async def _start_broker(fleet: Fleet, broker_kind: str) -> None:
    if broker_kind == "embedded":
        fleet.runtime.broker = embedded_broker(fleet.runtime)
        await fleet.runtime.broker.start()
    else:
        await asyncio.to_thread(fleet.runtime.test_mosquitto.start)  # type: ignore[attr-defined]


async def guest_pass(
    fleet: Fleet, token: str, name: str, starts: datetime, ends: datetime, **extra: Any
) -> httpx.Response:
    """A resident asks for a QR pass for a guest at the world's entrance."""
    return await fleet.api.post(
        "/v1/me/guest-passes",
        token=token,
        json={
            "entrance_id": fleet.world.ids["entrance"],
            "guest_name": name,
            "guest_phone": unique_phone(),
            "starts_at": starts.isoformat(),
            "ends_at": ends.isoformat(),
            **extra,
        },
    )


def _local(url: str) -> str:
    return "/" + url.split("://", 1)[-1].split("/", 1)[1]


async def _the_pass_is_a_link_its_issuer_and_staff_read(
    fleet: Fleet, owner: str, guest: dict[str, Any]
) -> None:
    """``GET /v1/keys/{id}/pass`` is the pass as JSON, as the README says: for the
    partner's staff and for the resident who issued it, not for another resident. Its
    images are at their own URLs, chosen with ``?format=``."""
    path = f"/v1/keys/{guest['key']['id']}/pass"
    for token in (fleet.world.tokens["partner_admin"], owner):
        links = await fleet.api.get(path, token=token)
        assert links.status_code == 200, links.text
        assert links.headers["content-type"] == "application/json"
        body = links.json()
        assert body["key"]["id"] == guest["key"]["id"]
        assert {"token", "link", "png", "svg"} <= set(body)
        assert body["png"].endswith(f"/v1/passes/{body['token']}?format=png")
    neighbour = await resident_token(
        fleet.api, fleet.runtime, fleet.world, fleet.world.other_site_ids["person"]
    )
    assert (await fleet.api.get(path, token=neighbour)).status_code == 404
    png = await fleet.api.get(_local(body["png"]))
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")
    svg = await fleet.api.get(_local(guest["svg"]))
    assert svg.headers["content-type"] == "image/svg+xml"
    # The old spelling is refused, as any parameter a route does not have.
    misspelt = await fleet.api.get(f"/v1/passes/{body['token']}", params={"image": "svg"})
    assert misspelt.status_code == 422, misspelt.text
    assert misspelt.json()["errors"] == [
        {
            "path": ["query", "image"],
            "message": "Extra inputs are not permitted",
            "code": "extra_forbidden",
        }
    ]


async def test_a_guest_qr_pass_works_only_in_its_window_and_n_times(fleet: Fleet) -> None:
    _, reader = await fleet.run("entrance_reader")
    await wait_for_trust(reader)
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    now = datetime.now(UTC)
    created = await guest_pass(fleet, owner, "친구", now, now + timedelta(hours=2), max_uses=2)
    assert created.status_code == 201, created.text
    guest = created.json()
    assert guest["key"]["kind"] == "guest"
    assert [reader.present(guest["token"], method="qr").granted for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert reader.present(guest["token"], method="qr").reason == "replayed"
    await _the_pass_is_a_link_its_issuer_and_staff_read(fleet, owner, guest)
    later = await guest_pass(
        fleet, owner, "나중", now + timedelta(hours=5), now + timedelta(hours=6)
    )
    assert reader.present(later.json()["token"], method="qr").reason == ("credential_not_yet_valid")
    reader.faults.clock_offset = 7 * 3600
    try:
        assert reader.present(guest["token"], method="qr").reason == "credential_expired"
    finally:
        reader.faults.clock_offset = 0


async def test_a_partner_obtains_a_keys_credentials_as_json_to_test_a_reader(
    fleet: Fleet,
) -> None:
    _, reader = await fleet.run("entrance_reader")
    await wait_for_trust(reader)
    key = await resident_key(fleet)
    issued = await fleet.api.post(
        f"/v1/keys/{key['id']}/credentials",
        token=fleet.world.tokens["api_key"],
        json={"per_entrance": 1},
    )
    assert issued.status_code == 200, issued.text
    [mine] = [c for c in issued.json() if c["entrance_id"] == fleet.world.ids["entrance"]]
    assert mine["key_id"] == key["id"]
    assert set(mine) == {"key_id", "entrance_id", "credential_id", "expires_at", "token"}
    assert reader.present(mine["token"]).granted
    # Staff of one site do not reach the keys of another: a 404, as for any object.
    other = fleet.world.other_site_ids["key"]
    scoped = await fleet.api.post(
        f"/v1/keys/{other}/credentials", token=fleet.world.tokens["site_manager"]
    )
    assert scoped.status_code == 404
    missing = await fleet.api.post(
        "/v1/keys/00000000-0000-7000-8000-000000000000/credentials",
        token=fleet.world.tokens["api_key"],
    )
    assert missing.status_code == 404
