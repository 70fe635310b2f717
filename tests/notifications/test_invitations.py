"""A resident added is told how to sign in: an SMS in their language, from the outbox
(after the commit, retried like any delivery), through the sender that sends sign-in codes;
and the sign-in code itself comes in their language."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import select

from sesame.auth.sms import MemorySmsSender
from sesame.models import Delivery
from tests.device_fixtures import Fleet
from tests.notifications.conftest import Providers, notifying
from tests.support import eventually, sms_code, unique_phone


async def add_person(fleet: Fleet, locale: str, kind: str = "resident") -> tuple[str, str]:
    phone = unique_phone()
    person = await fleet.api.create(
        "/v1/people",
        fleet.world.tokens["partner_admin"],
        {
            "site_id": fleet.world.site_id,
            "phone": phone,
            "name": "주민",
            "locale": locale,
            "kind": kind,
        },
    )
    return str(person["id"]), phone


def texts_to(sms: MemorySmsSender, phone: str) -> list[str]:
    return [m.text for m in sms.sent if m.phone == phone]


async def test_an_added_resident_is_invited_by_sms_in_their_language(
    fleet: Fleet, providers: Providers
) -> None:
    sms: MemorySmsSender = fleet.runtime.sms_sender
    site = (
        await fleet.api.get(
            f"/v1/sites/{fleet.world.site_id}", token=fleet.world.tokens["partner_admin"]
        )
    ).json()["name"]

    # The delivery is recorded like any other (once sent), and holds no phone number.
    async def recorded() -> list[Delivery] | None:
        async with fleet.runtime.read_session_factory() as session:
            found = await session.execute(
                select(Delivery).where(
                    Delivery.event_type == "resident.invited",
                    Delivery.person_id == UUID(korean_id),
                )
            )
            rows = list(found.scalars())
        return rows if rows and all(r.status.value == "sent" for r in rows) else None

    async with notifying(fleet.runtime, providers):
        _, english = await add_person(fleet, "en-US")
        korean_id, korean = await add_person(fleet, "ko-KR")
        _, guest = await add_person(fleet, "en-US", kind="guest")
        await eventually(lambda: texts_to(sms, english) and texts_to(sms, korean))
        mine = await eventually(recorded)
    [invitation] = texts_to(sms, english)
    assert "sign in" in invitation
    assert site in invitation
    assert "Sesame app" in invitation
    [korean_invitation] = texts_to(sms, korean)
    assert "입주민" in korean_invitation
    assert site in korean_invitation
    assert texts_to(sms, guest) == []  # only residents are invited
    assert [(r.channel, r.category, r.locale) for r in mine] == [("sms", "invitation", "ko")]
    assert korean not in repr(_values(mine[0]))


def _values(row: Any) -> list[Any]:
    return [getattr(row, c.key) for c in row.__table__.columns]


async def test_the_sign_in_code_comes_in_the_persons_language(fleet: Fleet) -> None:
    sms: MemorySmsSender = fleet.runtime.sms_sender
    _, english = await add_person(fleet, "en-GB")
    _, korean = await add_person(fleet, "ko")
    for phone in (english, korean):
        response = await fleet.api.post("/v1/auth/codes", json={"phone": phone})
        assert response.status_code == 202
    [english_code] = texts_to(sms, english)
    assert english_code.startswith("[Sesame] Your sign-in code is ")
    assert "인증번호" not in english_code
    [korean_code] = texts_to(sms, korean)
    assert "인증번호" in korean_code
    assert "code" not in korean_code
    assert sms_code(sms, korean) in korean_code
