"""Nobody switches off someone else's notifications: registering another person's e-mail
address or push token takes nothing from them, an address is used only once its owner
confirms it, and a token changes hands only when its owner lets go of it."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import select

from sesame.kit.clock import OffsetClock
from sesame.kit.logging import configure_logging
from sesame.models import Delivery, Destination
from sesame.notifications.channels.base import Message
from sesame.notifications.channels.console import ConsoleChannel
from sesame.runtime import Runtime
from tests.keys.test_keys_e2e import sign_in
from tests.notifications.conftest import Providers, mailed_code, notifying
from tests.support import Api, World, eventually, unique, unique_phone


async def resident(api: Api, world: World, runtime: Runtime) -> tuple[str, str, str]:
    """A person living in the world's first unit, signed in: (person id, phone, token)."""
    admin = world.tokens["partner_admin"]
    phone = unique_phone()
    person = await api.create(
        "/v1/people", admin, {"site_id": world.site_id, "phone": phone, "name": "주민"}
    )
    await api.create(
        "/v1/households",
        admin,
        {"person_id": person["id"], "unit_id": world.ids["unit"], "role": "member"},
    )
    return str(person["id"]), phone, await sign_in(api, runtime, phone)


async def register(api: Api, token: str, body: dict[str, Any]) -> Any:
    return await api.post("/v1/me/notification-destinations", token=token, json=body)


async def confirm(api: Api, token: str, destination_id: str, code: str) -> Any:
    return await api.post(
        f"/v1/me/notification-destinations/{destination_id}/confirm",
        token=token,
        json={"code": code},
    )


async def revoke_a_key(api: Api, world: World, person_id: str) -> None:
    """Staff give the person a key and take it back: a critical notification for them."""
    admin = world.tokens["partner_admin"]
    key = await api.create(
        "/v1/keys", admin, {"person_id": person_id, "kind": "staff", "site_id": world.site_id}
    )
    assert (await api.delete(f"/v1/keys/{key['id']}", token=admin)).status_code == 204


async def settled(api: Api, token: str, count: int) -> list[dict[str, Any]]:
    async def done() -> list[dict[str, Any]] | None:
        page = (await api.get("/v1/me/notifications", token=token)).json()
        finished = [d for d in page["items"] if d["status"] != "queued"]
        return finished if len(finished) >= count else None

    return list(await eventually(done))


def mails_to(providers: Providers, address: str) -> list[Any]:
    return [e for e in providers.smtp.envelopes if address in e.rcpt_tos]


async def test_registering_someone_elses_address_takes_nothing_from_them(
    api: Api,
    world: World,
    other_world: World,
    runtime: Runtime,
    providers: Providers,
) -> None:
    """Another partner's resident registers the victim's address: the victim's stays
    active and keeps receiving; the attacker's stays unconfirmed and sends them nothing."""
    address = f"{unique('victim')}@example.com"
    victim_id, _, victim = await resident(api, world, runtime)
    attacker_id, _, attacker = await resident(api, other_world, runtime)
    async with notifying(runtime, providers):
        mine = (await register(api, victim, {"kind": "email", "address": address})).json()
        code = await mailed_code(providers, address)
        assert (await confirm(api, victim, mine["id"], code)).json()["active"]

        stolen = await register(api, attacker, {"kind": "email", "address": address})
        assert stolen.status_code == 201, stolen.text
        assert (stolen.json()["active"], stolen.json()["deactivated_reason"]) == (
            False,
            "unconfirmed",
        )
        listed = (await api.get("/v1/me/notification-destinations", token=victim)).json()
        assert [(d["id"], d["active"]) for d in listed] == [(mine["id"], True)]
        await eventually(lambda: len(mails_to(providers, address)) == 2)  # the second code
        providers.smtp.envelopes.clear()

        await revoke_a_key(api, other_world, attacker_id)
        await revoke_a_key(api, world, victim_id)
        # Routing keeps the outbox's order: once the victim's news is out, the attacker's
        # events (committed first) have been routed too.
        victims = await settled(api, victim, 3)  # their code, the key issued and revoked
        attackers = (await api.get("/v1/me/notifications", token=attacker)).json()["items"]
    assert [d["category"] for d in attackers] == ["confirmation"]  # nothing else, anywhere
    assert sorted(d["category"] for d in victims) == ["confirmation", "keys", "security"]
    assert all(d["status"] == "sent" for d in victims)
    subjects = sorted(str(e.message["Subject"]) for e in mails_to(providers, address))
    assert subjects == ["열쇠가 공유되었습니다", "열쇠가 회수되었습니다"]  # the victim's own, once


async def test_a_push_token_active_for_someone_else_changes_hands_only_when_released(
    api: Api, world: World, other_world: World, runtime: Runtime
) -> None:
    """An FCM token or browser of someone else's is a 409 and theirs stays active; once
    they sign out of that install (remove it), the next person's registration works."""
    _, _, owner = await resident(api, world, runtime)
    _, _, stranger = await resident(api, other_world, runtime)
    token = {"kind": "fcm", "token": f"install-{unique('t')}-{'x' * 30}", "install_id": "phone"}
    theirs = (await register(api, owner, token)).json()

    taken = await register(api, stranger, {**token, "install_id": "mine"})
    assert taken.status_code == 409, taken.text
    assert taken.json()["details"]["reason"] == "destination_in_use"
    listed = (await api.get("/v1/me/notification-destinations", token=owner)).json()
    assert [(d["id"], d["active"]) for d in listed] == [(theirs["id"], True)]
    assert (await api.get("/v1/me/notification-destinations", token=stranger)).json() == []

    # The phone changes hands: the app removes its registration when its user signs out.
    removed = await api.delete(f"/v1/me/notification-destinations/{theirs['id']}", token=owner)
    assert removed.status_code == 204
    handed_on = await register(api, stranger, {**token, "install_id": "mine"})
    assert handed_on.status_code == 201, handed_on.text
    assert handed_on.json()["active"]


async def test_a_confirmation_code_is_hashed_bounded_in_tries_and_time_and_not_resent_at_will(
    api: Api, world: World, runtime: Runtime, providers: Providers
) -> None:
    """Five wrong codes lock it; a new code at most once a minute; a code lives 30 minutes;
    neither the destination nor the delivery log keeps the code."""
    clock = runtime.clock
    assert isinstance(clock, OffsetClock)
    address = f"{unique('owner')}@example.com"
    _, _, token = await resident(api, world, runtime)
    # The codes are asked for 40 minutes "ago" and checked now: the signed-in session
    # stays valid throughout, while the codes age.
    clock.advance(timedelta(minutes=-40))
    async with notifying(runtime, providers):
        row = (await register(api, token, {"kind": "email", "address": address})).json()
        code = await mailed_code(providers, address)
        async with runtime.session_factory() as session:
            stored = await session.get(Destination, UUID(row["id"]))
            bodies = (await session.execute(select(Delivery.body))).scalars().all()
        assert stored is not None
        assert stored.confirmation_digest is not None
        assert code not in stored.confirmation_digest
        assert not any(code in body for body in bodies)

        wrong = f"{(int(code) + 1) % 10**8:08d}"
        for _ in range(5):
            refused = await confirm(api, token, row["id"], wrong)
            assert refused.status_code == 422, refused.text
        locked = await confirm(api, token, row["id"], code)
        assert locked.status_code == 409
        assert locked.json()["details"]["reason"] == "confirmation_locked"

        again = await register(api, token, {"kind": "email", "address": address})
        assert again.status_code == 201
        assert (await confirm(api, token, row["id"], code)).status_code == 409  # no new code
        assert len(mails_to(providers, address)) == 1

        clock.advance(timedelta(minutes=2))
        await register(api, token, {"kind": "email", "address": address})
        await eventually(lambda: len(mails_to(providers, address)) == 2)
        fresh = await mailed_code(providers, address)
        clock.reset()  # 38 minutes after the code was sent
        expired = await confirm(api, token, row["id"], fresh)
        assert expired.status_code == 409
        assert expired.json()["details"]["reason"] == "confirmation_expired"

        await register(api, token, {"kind": "email", "address": address})
        await eventually(lambda: len(mails_to(providers, address)) == 3)
        last = await mailed_code(providers, address)
        accepted = await confirm(api, token, row["id"], last)
    assert accepted.status_code == 200, accepted.text
    assert (accepted.json()["active"], accepted.json()["deactivated_reason"]) == (True, None)


async def test_another_persons_destination_cannot_be_confirmed(
    api: Api, world: World, runtime: Runtime, providers: Providers
) -> None:
    """Someone else's destination id is a 404, as any object of theirs."""
    _, _, owner = await resident(api, world, runtime)
    _, _, stranger = await resident(api, world, runtime)
    address = f"{unique('mine')}@example.com"
    row = (await register(api, owner, {"kind": "email", "address": address})).json()
    response = await confirm(api, stranger, row["id"], "00000000")
    assert response.status_code == 404


def console_message(category: str, body: str) -> Message:
    return Message(uuid4(), "t", "a@example.com", "title", body, category, "ko", "e")


async def test_a_confirmation_code_never_reaches_the_log() -> None:
    """Without SMTP, e-mail goes to the log: the code's message is logged without its body,
    while other messages keep theirs."""
    stream = io.BytesIO()
    configure_logging("debug", "json", stream=stream)
    try:
        await ConsoleChannel("email").send_many(
            [
                console_message("confirmation", "Your code: 12345678"),
                console_message("doorbell", "Someone is at A-101"),
            ]
        )
    finally:
        configure_logging("warning", "console")
    logged = [json.loads(line) for line in stream.getvalue().splitlines() if line]
    assert [entry["body"] for entry in logged if entry.get("event") == "notification"] == [
        "(withheld)",
        "Someone is at A-101",
    ]
