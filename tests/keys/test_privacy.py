"""Residents reach only their own keys and doors; staff only their scope's access log."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import select

from sesame.keys import lifecycle
from sesame.ledger import entries
from sesame.models import ActionAttempt, Key, KeyStatus
from tests.device_fixtures import Fleet
from tests.keys.test_keys_e2e import sign_in
from tests.keys.test_pins import lock as lock_at
from tests.keys.test_pins import pin_status
from tests.support import Api, World, unique_phone


async def resident_of(api: Api, runtime: Any, world: World) -> str:
    person = (
        await api.get(f"/v1/people/{world.ids['person']}", token=world.tokens["partner_admin"])
    ).json()
    return await sign_in(api, runtime, person["phone"])


async def refused_open(api: Api, world: World, token: str) -> None:
    await api.patch(
        f"/v1/keys/{world.ids['key']}",
        token=world.tokens["partner_admin"],
        json={"status": "suspended"},
    )
    response = await api.post(f"/v1/entrances/{world.ids['entrance']}/open", token=token)
    assert response.status_code == 403


async def test_residents_see_and_touch_only_their_own_keys(
    api: Api, world: World, runtime: Any
) -> None:
    mine = await resident_of(api, runtime, world)
    keys = (await api.get("/v1/me/keys", token=mine)).json()
    assert [k["id"] for k in keys] == [world.ids["key"]]
    other_key = world.other_site_ids["key"]
    share = await api.post(
        f"/v1/me/keys/{other_key}/share", token=mine, json={"phone": "+821055550000", "name": "x"}
    )
    assert share.status_code == 404
    assert (await api.delete(f"/v1/me/keys/{other_key}", token=mine)).status_code == 404
    for path in ("/v1/keys", "/v1/pin-codes", f"/v1/keys/{world.ids['key']}"):
        assert (await api.get(path, token=mine)).status_code == 403, path


async def test_the_access_log_is_private(
    api: Api, world: World, other_world: World, runtime: Any
) -> None:
    mine = await resident_of(api, runtime, world)
    theirs = await resident_of(api, runtime, other_world)
    await refused_open(api, world, mine)
    await refused_open(api, other_world, theirs)
    own = (await api.get("/v1/access-events", token=mine)).json()["items"]
    assert [e["key_id"] for e in own] == [world.ids["key"]]
    other = (await api.get("/v1/access-events", token=theirs)).json()["items"]
    assert [e["key_id"] for e in other] == [other_world.ids["key"]]
    manager = (await api.get("/v1/access-events", token=world.tokens["site_manager"])).json()[
        "items"
    ]
    assert {e["site_id"] for e in manager} == {world.site_id}
    assert world.ids["key"] in {e["key_id"] for e in manager}
    foreign = (
        await api.get("/v1/access-events", token=other_world.tokens["partner_admin"])
    ).json()["items"]
    assert world.ids["key"] not in {e["key_id"] for e in foreign}
    assert (await api.get("/v1/access-events", token=world.tokens["installer"])).status_code == 403


async def test_signing_keys_are_published_per_site(api: Api, world: World) -> None:
    token = world.tokens["partner_admin"]
    rotated = await api.post(f"/v1/sites/{world.site_id}/signing-keys/rotate", token=token)
    assert rotated.status_code == 201
    again = await api.post(f"/v1/sites/{world.site_id}/signing-keys/rotate", token=token)
    published = (await api.get(f"/v1/sites/{world.site_id}/signing-keys", token=token)).json()
    assert [k["id"] for k in published] == [rotated.json()["id"], again.json()["id"]]
    assert [k["active"] for k in published] == [False, True]
    assert (
        await api.get(
            f"/v1/sites/{world.other_site_id}/signing-keys", token=world.tokens["site_manager"]
        )
    ).status_code == 404


async def ledger_of(
    fleet: Fleet, partner_id: str, wanted: Callable[[list[Any]], bool]
) -> list[Any]:
    """The partner's ledger entries (their exact bytes and decoded form) once ``wanted``
    holds for them."""
    token = fleet.world.tokens["partner_admin"]
    mine: list[Any] = []
    for _ in range(150):
        size = (await fleet.api.get("/v1/ledger", token=token)).json()["size"]
        mine = []
        for start in range(0, size, 1000):
            page = await fleet.api.get(
                "/v1/ledger/entries",
                token=token,
                params={"start": start, "end": min(size, start + 1000)},
            )
            for item in page.json()["entries"]:
                body = base64.b64decode(item["body"])
                entry = entries.parse(body)
                if entry["partner"] == partner_id:
                    mine.append((body, entry))
        if wanted(mine):
            return mine
        await asyncio.sleep(0.1)
    raise AssertionError(f"the ledger never held them: {[e['type'] for _, e in mine]}")


async def test_no_phone_number_email_or_name_reaches_the_ledger_or_actor_records(
    fleet: Fleet,
) -> None:
    """Every ledger topic, driven as staff, residents and devices do: no entry holds a
    phone number, an e-mail address or a name, and stored actors are opaque ids."""
    api, world = fleet.api, fleet.world
    admin = world.tokens["partner_admin"]
    names = ["Minji Kim 김민지", "Jisoo Park 박지수", "Hana Lee 이하나", "Courier Choi 최"]
    phones = [unique_phone() for _ in names]
    await fleet.run("entrance_reader")
    lock, keypad = await lock_at(fleet)
    # The resident of the world's unit, renamed so that the name is ours to look for.
    owner_id = world.ids["person"]
    renamed = await api.patch(f"/v1/people/{owner_id}", token=admin, json={"name": names[0]})
    assert renamed.status_code == 200, renamed.text
    owner_phone = renamed.json()["phone"]
    phones.append(owner_phone)
    owner = await sign_in(api, fleet.runtime, owner_phone)
    [resident] = (await api.get("/v1/keys", token=admin, params={"person_id": owner_id})).json()[
        "items"
    ]

    shared = await api.post(
        f"/v1/me/keys/{resident['id']}/share",
        token=owner,
        json={"phone": phones[1], "name": names[1]},
    )
    assert shared.status_code == 201, shared.text
    now = datetime.now(UTC)
    guest = await api.post(
        "/v1/me/guest-passes",
        token=owner,
        json={
            "entrance_id": world.ids["entrance"],
            "guest_name": names[2],
            "guest_phone": phones[2],
            "ends_at": (now + timedelta(hours=2)).isoformat(),
        },
    )
    assert guest.status_code == 201, guest.text
    opened = await api.post(
        f"/v1/entrances/{world.ids['entrance']}/open", token=owner, params={"wait": 5}
    )
    assert opened.status_code == 201, opened.text
    assert (await api.post("/v1/me/credentials", token=owner, json={})).status_code == 200
    taken = await api.delete(f"/v1/me/keys/{shared.json()['id']}", token=owner)
    assert taken.status_code == 204

    courier = await api.create(
        "/v1/people", admin, {"phone": phones[3], "name": names[3], "kind": "courier"}
    )
    staff_key = await api.create(
        "/v1/keys",
        admin,
        {
            "person_id": courier["id"],
            "kind": "courier",
            "carrier": "CJ Logistics",
            "building_id": world.ids["building"],
        },
    )
    partner_key = await api.create(
        "/v1/keys",
        world.tokens["api_key"],
        {
            "person_id": courier["id"],
            "kind": "courier",
            "carrier": "CJ",
            "building_id": world.ids["building"],
        },
    )
    for status in ("suspended", "active"):
        changed = await api.patch(
            f"/v1/keys/{staff_key['id']}", token=admin, json={"status": status}
        )
        assert changed.status_code == 200
    assert (await api.delete(f"/v1/keys/{staff_key['id']}", token=admin)).status_code == 204
    assert (
        await api.delete(f"/v1/keys/{partner_key['id']}", token=world.tokens["api_key"])
    ).status_code == 204

    pin = await api.create(
        "/v1/pin-codes", admin, {"device_id": lock["id"], "code": "4826", "name": names[3]}
    )
    await pin_status(fleet, pin["id"], {"set"})
    assert (await api.delete(f"/v1/pin-codes/{pin['id']}", token=admin)).status_code == 204
    await pin_status(fleet, pin["id"], {"removed"})
    theirs = await api.create(
        "/v1/pin-codes", admin, {"device_id": lock["id"], "code": "3907", "person_id": owner_id}
    )
    keypad.program_at_keypad((await pin_status(fleet, theirs["id"], {"set"}))["slot"], "9999")

    spare = await fleet.provision("entrance_reader", entrance=None, name=f"{names[0]}'s reader")
    rotated = await api.post(f"/v1/devices/{spare['id']}/credentials/rotate", token=admin)
    assert rotated.status_code == 200
    assert (await api.delete(f"/v1/devices/{spare['id']}", token=admin)).status_code == 204

    moved = await api.patch(
        f"/v1/households/{world.ids['household']}",
        token=world.tokens["site_manager"],
        json={"move_out_on": datetime.now(UTC).date().isoformat()},
    )
    assert moved.status_code == 200

    # Time's own changes: a key that starts in a second and ends three seconds later.
    soon = datetime.now(UTC)
    brief = await api.create(
        "/v1/keys",
        admin,
        {
            "person_id": courier["id"],
            "kind": "courier",
            "carrier": "CJ",
            "building_id": world.ids["building"],
            "starts_at": (soon + timedelta(seconds=1)).isoformat(),
            "ends_at": (soon + timedelta(seconds=4)).isoformat(),
        },
    )
    for _ in range(200):  # move stored statuses along, as the key's timing jobs do
        await lifecycle.advance(fleet.runtime)
        async with fleet.runtime.read_session_factory() as session:
            stored_status = await session.scalar(
                select(Key.status).where(Key.id == UUID(brief["id"]))
            )
        if stored_status is KeyStatus.EXPIRED:
            break
        await asyncio.sleep(0.05)

    topics = set(entries.TOPICS)

    def complete(found: list[Any]) -> bool:
        types = [e["type"] for _, e in found]
        return topics <= set(types) and types.count("key.revoked") >= 5

    found = await ledger_of(fleet, world.partner_id, complete)
    emails = [account["email"] for account in world.staff.values()]
    for _, entry in found:
        # Everything but the signature, whose random base64 could spell a short name.
        text = entries.canonical({k: v for k, v in entry.items() if k != "sig"}).decode()
        for phone in phones:
            assert phone[1:] not in text, entry  # without its "+", in any form
        for name in names:
            for part in name.split():
                assert part not in text, entry
        for email in emails:
            assert email.split("@")[0] not in text, entry
        assert "@" not in text, entry
        assert "under test" not in text  # the devices' names

    revoked = {e["subject"]["key"]: e for _, e in found if e["type"] == "key.revoked"}
    by_resident = revoked[shared.json()["id"]]
    assert by_resident["data"]["reason"] == "revoked_by_resident"
    assert by_resident["actor"] == {"kind": "resident", "person": owner_id}
    assert revoked[staff_key["id"]]["data"]["reason"] == "revoked_by_staff"
    assert revoked[partner_key["id"]]["data"]["reason"] == "revoked_by_partner"
    assert revoked[resident["id"]]["data"]["reason"] == "moved_out"

    # What staff see and what is stored: key names as typed or neutral, opaque actors.
    shared_read = (await api.get(f"/v1/keys/{shared.json()['id']}", token=admin)).json()
    guest_read = (await api.get(f"/v1/keys/{guest.json()['key']['id']}", token=admin)).json()
    assert (shared_read["name"], guest_read["name"]) == ("Shared key", "Guest pass")
    assert shared_read["revoked_reason"] == "revoked_by_resident"
    async with fleet.runtime.session_factory() as session:
        stored = [
            *(
                await session.execute(
                    select(Key.issued_by, Key.name, Key.revoked_reason).where(
                        Key.partner_id == UUID(world.partner_id)
                    )
                )
            ).all(),
            *(
                await session.execute(
                    select(ActionAttempt.requested_by).where(
                        ActionAttempt.partner_id == UUID(world.partner_id)
                    )
                )
            ).all(),
        ]
    text = repr(stored)
    for phone in phones:
        assert phone[1:] not in text
    assert f"resident:{owner_id}" in {row[0] for row in stored}
