"""Readers learn of every key they must refuse, however many, and for as long as any
credential issued for it may still be in date — no longer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import insert

from sesame.devices import protocol
from sesame.keys.credentials import MOBILE_LIFETIME, READER_CLOCK_GRACE, trust_documents
from sesame.keys.repository import KeyRepository
from sesame.kit.db import write_intent
from sesame.kit.ids import new_id
from sesame.kit.repository import TenantScope
from sesame.models import Key, KeyKind, KeyStatus, TargetKind
from sesame.sites.repository import SiteRepository
from tests.device_fixtures import Fleet
from tests.keys.test_keys_e2e import resident_key, resident_token, wait_for_trust

MANY = 20_000


def key_rows(fleet: Fleet, count: int, **values: Any) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    row = {
        "partner_id": UUID(fleet.world.partner_id),
        "site_id": UUID(fleet.world.site_id),
        "person_id": UUID(fleet.world.ids["person"]),
        "kind": KeyKind.COURIER,
        "target_kind": TargetKind.SITE,
        "carrier": "CJ",
        "uses_count": 0,
        "status": KeyStatus.REVOKED,
        "revoked_at": now,
        "created_at": now,
        "updated_at": now,
        **values,
    }
    return [{**row, "id": new_id()} for _ in range(count)]


async def add_keys(fleet: Fleet, rows: list[dict[str, Any]]) -> None:
    async with fleet.runtime.session_factory() as session:
        await session.execute(insert(Key), rows)
        await session.commit()


async def test_the_oldest_key_revoked_among_twenty_thousand_is_refused(fleet: Fleet) -> None:
    """A busy site: 20,000 newer keys were revoked today, their phones' credentials
    still in date. The site's oldest key is revoked now; the reader refuses it."""
    _, reader = await fleet.run("entrance_reader")
    await wait_for_trust(reader)
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    issued = await fleet.api.post("/v1/me/credentials", token=owner, json={"per_entrance": 2})
    assert issued.status_code == 200, issued.text
    tokens = [c["token"] for c in issued.json() if c["entrance_id"] == fleet.world.ids["entrance"]]
    assert reader.present(tokens[0]).granted
    oldest = await resident_key(fleet)
    await add_keys(fleet, key_rows(fleet, MANY))

    revoked = await fleet.api.delete(
        f"/v1/keys/{oldest['id']}", token=fleet.world.tokens["partner_admin"]
    )
    assert revoked.status_code == 204
    await wait_for_trust(reader, lambda t: UUID(oldest["id"]) in t.revoked_keys)
    assert len(reader.trust.revoked_keys) == MANY + 1
    assert reader.present(tokens[1]).reason == "key_revoked"


async def test_a_key_leaves_the_list_once_no_credential_of_it_can_be_in_date(
    fleet: Fleet,
) -> None:
    now = datetime.now(UTC)
    phone_window = MOBILE_LIFETIME + READER_CLOCK_GRACE
    listed = {
        "revoked an hour ago": key_rows(fleet, 1, revoked_at=now - timedelta(hours=1)),
        "suspended long ago": key_rows(
            fleet,
            1,
            status=KeyStatus.SUSPENDED,
            revoked_at=None,
            updated_at=now - timedelta(days=90),
        ),
        "used up just now": key_rows(
            fleet, 1, status=KeyStatus.EXPIRED, revoked_at=None, max_uses=1, uses_count=1
        ),
        "a guest pass revoked last week, running another week": key_rows(
            fleet,
            1,
            kind=KeyKind.GUEST,
            pass_id=new_id(),
            revoked_at=now - timedelta(days=7),
            ends_at=now + timedelta(days=7),
        ),
    }
    gone = {
        "revoked before the last phone credential expired": key_rows(
            fleet, 1, revoked_at=now - phone_window - timedelta(minutes=1)
        ),
        "revoked just now, but its end has passed": key_rows(
            fleet, 1, ends_at=now - timedelta(minutes=1)
        ),
        "a guest pass revoked today, its window over": key_rows(
            fleet, 1, kind=KeyKind.GUEST, pass_id=new_id(), ends_at=now - timedelta(seconds=1)
        ),
        "expired by its end": key_rows(
            fleet, 1, status=KeyStatus.EXPIRED, revoked_at=None, ends_at=now - timedelta(hours=1)
        ),
    }
    await add_keys(fleet, [row for rows in (*listed.values(), *gone.values()) for row in rows])
    async with fleet.runtime.read_session_factory() as session:
        blocked = set(
            await KeyRepository(session).blocked(
                UUID(fleet.world.site_id), now, mobile_lifetime=phone_window, limit=100
            )
        )
    for why, rows in listed.items():
        assert rows[0]["id"] in blocked, why
    for why, rows in gone.items():
        assert rows[0]["id"] not in blocked, why


async def test_past_the_protocols_limit_the_oldest_blocks_are_left_out_loudly(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "MAX_BLOCKED_KEYS", 3)
    now = datetime.now(UTC)
    rows = [
        row
        for minutes in range(5)
        for row in key_rows(fleet, 1, revoked_at=now - timedelta(minutes=minutes))
    ]
    await add_keys(fleet, rows)
    before = overflows()
    with write_intent():  # it writes the site's first signing key
        async with fleet.runtime.session_factory() as session:
            scope = TenantScope.platform()
            site = await SiteRepository(session).get(scope, UUID(fleet.world.site_id))
            assert site is not None
            [document] = await trust_documents(
                session, fleet.runtime, site, [UUID(fleet.world.ids["entrance"])]
            )
            await session.commit()
    assert document.revoked_keys == [row["id"] for row in rows[:3]]  # the newest blocks
    assert overflows() == before + 1


def overflows() -> float:
    return REGISTRY.get_sample_value("sesame_trust_block_list_overflow_total") or 0.0


async def test_trust_versions_grow_even_when_the_servers_clock_goes_back(fleet: Fleet) -> None:
    """A reader ignores a document older than the newest it has: a server whose clock
    stepped back (or a second server a little behind) must still publish a larger one."""
    _, reader = await fleet.run("entrance_reader")
    await wait_for_trust(reader)
    first = reader.trust
    assert first is not None
    assert abs(first.version - datetime.now(UTC).timestamp() * 1000) < 600_000  # wall clock
    clock = fleet.runtime.clock
    clock.advance(timedelta(hours=-2))  # type: ignore[attr-defined]
    try:
        key = await resident_key(fleet)
        revoked = await fleet.api.delete(
            f"/v1/keys/{key['id']}", token=fleet.world.tokens["partner_admin"]
        )
        assert revoked.status_code == 204
        await wait_for_trust(reader, lambda t: key["id"] in {str(k) for k in t.revoked_keys})
    finally:
        clock.advance(timedelta(hours=2))  # type: ignore[attr-defined]
    assert reader.trust is not None
    assert reader.trust.version > first.version


async def test_a_reader_moved_off_its_entrance_stops_deciding_for_it(fleet: Fleet) -> None:
    device, reader = await fleet.run("entrance_reader")
    await wait_for_trust(reader)
    owner = await resident_token(fleet.api, fleet.runtime, fleet.world, fleet.world.ids["person"])
    issued = await fleet.api.post("/v1/me/credentials", token=owner, json={"per_entrance": 2})
    tokens = [c["token"] for c in issued.json() if c["entrance_id"] == device["entrance_id"]]
    assert reader.present(tokens[0]).granted
    moved = await fleet.api.patch(
        f"/v1/devices/{device['id']}",
        token=fleet.world.tokens["partner_admin"],
        json={"entrance_id": None},
    )
    assert moved.status_code == 200, moved.text
    await wait_for_trust(reader, lambda t: t.entrance_id is None)
    assert reader.trust is not None
    assert reader.trust.keys == []
    refused = reader.present(tokens[1])
    assert (refused.granted, refused.reason) == (False, "no_trust")
