"""Events become notifications on real wire formats: a doorbell rings the household's
phones, browsers and inboxes in their languages; dead tokens end deactivated; preferences
mute all but critical news; partners get signed, filtered, retried webhooks; campaigns
reach a building."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sesame.notifications.repository import NotificationRepository
from sesame.notifications.testing.webhooks import signature_matches
from tests.device_fixtures import Fleet
from tests.keys.test_keys_e2e import guest_pass, sign_in, wait_for_trust
from tests.notifications.conftest import Providers, mailed_code, notifying
from tests.support import ShiftableClock, eventually, unique_phone


async def resident(fleet: Fleet, locale: str, unit: str = "unit") -> tuple[dict[str, Any], str]:
    """A person living in the world's unit, signed in: (person, resident token)."""
    admin = fleet.world.tokens["partner_admin"]
    phone = unique_phone()
    person = await fleet.api.create(
        "/v1/people",
        admin,
        {"site_id": fleet.world.site_id, "phone": phone, "name": "주민", "locale": locale},
    )
    await fleet.api.create(
        "/v1/households",
        admin,
        {"person_id": person["id"], "unit_id": fleet.world.ids[unit], "role": "member"},
    )
    return person, await sign_in(fleet.api, fleet.runtime, phone)


async def register(fleet: Fleet, token: str, body: dict[str, Any]) -> dict[str, Any]:
    return await fleet.api.create("/v1/me/notification-destinations", token, body)


async def issue_and_revoke_a_key(fleet: Fleet, person_id: str) -> str:
    """Staff give the person a key and take it back: ``key.issued``, ``key.revoked``."""
    admin = fleet.world.tokens["partner_admin"]
    key = await fleet.api.create(
        "/v1/keys",
        admin,
        {"person_id": person_id, "kind": "staff", "building_id": fleet.world.ids["building"]},
    )
    assert (await fleet.api.delete(f"/v1/keys/{key['id']}", token=admin)).status_code == 204
    return str(key["id"])


def fcm_token(name: str) -> str:
    return f"{name}-{'x' * 40}"


async def test_a_doorbell_rings_the_household_on_every_channel_in_its_language(
    fleet: Fleet, providers: Providers
) -> None:
    korean, ko_token = await resident(fleet, "ko-KR")
    english, en_token = await resident(fleet, "en-US")
    browser = providers.push.subscribe()
    await register(fleet, ko_token, {"kind": "fcm", "token": fcm_token("ko"), "install_id": "p1"})
    await register(fleet, ko_token, {"kind": "webpush", **browser.as_json()})
    await register(fleet, en_token, {"kind": "fcm", "token": fcm_token("en"), "install_id": "p2"})
    # The same install registers a new token: the old one is replaced, not kept.
    await register(fleet, en_token, {"kind": "fcm", "token": fcm_token("en2"), "install_id": "p2"})
    listed = (await fleet.api.get("/v1/me/notification-destinations", token=en_token)).json()
    assert [d["shown"] for d in listed] == [f"…{fcm_token('en2')[-6:]}"]
    key = (await fleet.api.get("/v1/notifications/web-push-key", token=ko_token)).json()
    assert len(key["public_key"]) == 87  # a 65-byte P-256 point, base64url

    device = await fleet.provision("doorbell", entrance=None, unit_id=fleet.world.ids["unit"])
    bell = await fleet.start(fleet.simulator(device))
    async with notifying(fleet.runtime, providers):
        # An address is used once its owner has entered the code mailed to it.
        mail = await register(fleet, ko_token, {"kind": "email", "address": "korean@example.com"})
        assert (mail["active"], mail["deactivated_reason"]) == (False, "unconfirmed")
        code = await mailed_code(providers, "korean@example.com")
        confirmed = await fleet.api.post(
            f"/v1/me/notification-destinations/{mail['id']}/confirm",
            token=ko_token,
            json={"code": code},
        )
        assert confirmed.json()["active"], confirmed.text
        providers.smtp.envelopes.clear()
        bell.ring()
        pushed = await eventually(
            lambda: len(providers.fcm.standin.messages) >= 2 and providers.fcm.standin.messages
        )
        await eventually(lambda: providers.push.deliveries and providers.smtp.envelopes)
        mine = await eventually(lambda: _sent(fleet, ko_token, 4), seconds=10)
    by_token = {m["token"]: m for m in pushed}
    assert by_token[fcm_token("ko")]["notification"]["title"] == "초인종"
    assert by_token[fcm_token("en2")]["notification"]["title"] == "Doorbell"
    assert fcm_token("en") not in by_token
    data = by_token[fcm_token("ko")]["data"]
    assert data["category"] == "doorbell"
    assert data["device_id"] == device["id"]
    assert all(isinstance(v, str) for v in data.values())
    decrypted = providers.push.deliveries[0].payload  # the stand-in decrypted it (RFC 8291)
    assert decrypted["title"] == "초인종"
    assert decrypted["transaction_id"]
    mail = providers.smtp.envelopes[0]
    assert mail.rcpt_tos == ["korean@example.com"]
    assert mail.message["Subject"] == "초인종"
    ids = {d["transaction_id"] for d in mine}
    assert data["transaction_id"] in ids
    assert decrypted["transaction_id"] in ids
    rang = [d for d in mine if d["category"] == "doorbell"]
    assert {d["channel"] for d in rang} == {"fcm", "webpush", "email"}
    assert english["id"] != korean["id"]


async def _sent(fleet: Fleet, token: str, count: int) -> list[dict[str, Any]] | None:
    page = (await fleet.api.get("/v1/me/notifications", token=token)).json()
    sent = [d for d in page["items"] if d["status"] == "sent"]
    return sent if len(sent) >= count else None


async def test_dead_tokens_end_deactivated_and_critical_news_ignores_preferences(
    fleet: Fleet, providers: Providers
) -> None:
    person, token = await resident(fleet, "en-US")
    browser = providers.push.subscribe()
    providers_gone = providers.push
    await register(fleet, token, {"kind": "fcm", "token": fcm_token("dead"), "install_id": "old"})
    await register(fleet, token, {"kind": "webpush", **browser.as_json()})
    await register(fleet, token, {"kind": "fcm", "token": fcm_token("live"), "install_id": "new"})
    muted = await fleet.api.request(
        "PUT",
        "/v1/me/notification-preferences",
        token=token,
        json=[{"category": "keys", "enabled": False}, {"category": "security", "enabled": False}],
    )
    assert muted.status_code == 200, muted.text
    choices = {p["category"]: p for p in muted.json()}
    assert not choices["keys"]["enabled"]
    assert choices["security"]["critical"]
    async with notifying(fleet.runtime, providers):
        providers_gone.expire(browser)
        await issue_and_revoke_a_key(fleet, person["id"])

        async def settled() -> list[dict[str, Any]] | None:
            page = (await fleet.api.get("/v1/me/notifications", token=token)).json()
            done = [d for d in page["items"] if d["status"] != "queued"]
            return done if len(done) >= 3 else None

        done = await eventually(settled)
    # Only the revocation (critical) went out; the muted "key issued" did not.
    assert {d["event_type"] for d in done} == {"key.revoked"}
    outcome = {d["channel"] + ":" + str(d["error_code"]): d["status"] for d in done}
    assert outcome == {
        "fcm:UNREGISTERED": "failed",
        "webpush:http_410": "failed",
        "fcm:None": "sent",
    }
    destinations = (await fleet.api.get("/v1/me/notification-destinations", token=token)).json()
    state = {
        d["install_id"] or "browser": (d["active"], d["deactivated_reason"]) for d in destinations
    }
    assert state == {
        "old": (False, "provider_gone"),
        "browser": (False, "provider_gone"),
        "new": (True, None),
    }


async def test_partner_webhooks_are_signed_filtered_retried_and_rotated(
    fleet: Fleet, providers: Providers
) -> None:
    admin = fleet.world.tokens["partner_admin"]
    endpoint = await fleet.api.create(
        "/v1/webhook-endpoints",
        admin,
        {"url": providers.hooks.url("/partner"), "event_types": ["key.revoked"]},
    )
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    again = (await fleet.api.get(f"/v1/webhook-endpoints/{endpoint['id']}", token=admin)).json()
    assert again["secret"] is None  # shown once
    person, _ = await resident(fleet, "ko-KR")

    async with notifying(fleet.runtime, providers):
        providers.hooks.reset([secret])
        providers.hooks.fail_next(1, 503)
        revoked = await issue_and_revoke_a_key(fleet, person["id"])
        event = (await eventually(lambda: providers.hooks.events, seconds=20))[0]
        assert providers.hooks.attempts == 2  # a 503 first, then the retry ~5 s later
        assert event.body["type"] == "key.revoked"  # "key.issued" was filtered out
        assert event.body["data"]["aggregate_id"] == revoked
        assert signature_matches(secret, event.headers, event.raw_body)

        rotated = await fleet.api.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", token=admin
        )
        new_secret = rotated.json()["secret"]
        assert new_secret != secret
        providers.hooks.reset([new_secret])
        await issue_and_revoke_a_key(fleet, person["id"])
        signed = (await eventually(lambda: providers.hooks.events))[0]
    assert len(signed.signatures) == 2  # both secrets sign during the overlap
    assert signature_matches(new_secret, signed.headers, signed.raw_body)
    assert signature_matches(secret, signed.headers, signed.raw_body)
    listed = await fleet.api.get(
        "/v1/notifications/deliveries",
        token=admin,
        params={"channel": "webhook", "status": "sent"},
    )
    assert listed.status_code == 200
    assert any(d["attempts"] == 2 for d in listed.json()["items"])


async def test_a_campaign_reaches_every_resident_of_a_building_in_their_language(
    fleet: Fleet, providers: Providers
) -> None:
    admin = fleet.world.tokens["partner_admin"]
    tokens = {}
    for name, locale in (("ko1", "ko-KR"), ("ko2", "ko"), ("en1", "en-GB")):
        _, token = await resident(fleet, locale)
        await register(fleet, token, {"kind": "fcm", "token": fcm_token(name), "install_id": name})
        tokens[name] = token
    content = {
        "ko": {"title": "단수 안내", "body": "내일 10시부터 단수됩니다."},
        "en": {"title": "Water outage", "body": "No water tomorrow from 10:00."},
    }
    tomorrow = {
        "site_id": fleet.world.site_id,
        "content": content,
        "send_at": (fleet.runtime.clock.now() + timedelta(days=1)).isoformat(),
    }
    later = await fleet.api.create("/v1/notifications/campaigns", admin, tomorrow)
    kept = await fleet.api.create("/v1/notifications/campaigns", admin, tomorrow)
    assert later["status"] == kept["status"] == "scheduled"
    cancelled = await fleet.api.post(
        f"/v1/notifications/campaigns/{later['id']}/cancel", token=admin
    )
    assert cancelled.json()["status"] == "cancelled"
    async with notifying(fleet.runtime, providers):
        campaign = await fleet.api.create(
            "/v1/notifications/campaigns",
            admin,
            {
                "site_id": fleet.world.site_id,
                "building_id": fleet.world.ids["building"],
                "content": content,
            },
        )

        async def progress() -> dict[str, Any] | None:
            read = await fleet.api.get(f"/v1/notifications/campaigns/{campaign['id']}", token=admin)
            body: dict[str, Any] = read.json()
            return (
                body
                if body["status"] == "queued" and not body["deliveries"].get("queued")
                else None
            )

        done = await eventually(progress, seconds=20)
    assert done["deliveries"]["sent"] == done["recipients"] >= 3
    titles = {m["token"]: m["notification"]["title"] for m in providers.fcm.standin.messages}
    assert titles[fcm_token("ko1")] == titles[fcm_token("ko2")] == "단수 안내"
    assert titles[fcm_token("en1")] == "Water outage"

    # A day later the campaign that was kept goes out; the cancelled one, due at the same
    # moment, does not.
    clock = fleet.runtime.clock
    assert isinstance(clock, ShiftableClock)
    clock.advance(timedelta(days=1, minutes=1))

    def sent_for(campaign_id: str) -> list[dict[str, Any]]:
        messages = providers.fcm.standin.messages
        return [m for m in messages if m["data"].get("campaign_id") == campaign_id]

    async with notifying(fleet.runtime, providers):
        await eventually(lambda: len(sent_for(kept["id"])) >= 3, seconds=20)
    assert sent_for(later["id"]) == []


async def test_a_used_guest_pass_tells_its_issuer_and_device_trouble_tells_the_managers(
    fleet: Fleet, providers: Providers
) -> None:
    reader_device, reader = await fleet.run("entrance_reader")
    reader_id = reader_device["id"]
    await wait_for_trust(reader)
    _, token = await resident(fleet, "ko-KR")
    await register(fleet, token, {"kind": "fcm", "token": fcm_token("host"), "install_id": "h"})
    now = datetime.now(UTC)
    async with notifying(fleet.runtime, providers):
        created = await guest_pass(fleet, token, "친구", now, now + timedelta(hours=2))
        assert created.status_code == 201, created.text
        assert reader.present(created.json()["token"], method="qr").granted
        told = await eventually(
            lambda: [m for m in providers.fcm.standin.messages if m["token"] == fcm_token("host")]
        )
        reader.emit("low_battery", level=9)
        await reader.crash()
        manager = fleet.world.staff["site_manager"]["email"]

        async def recorded_offline() -> bool:
            async with fleet.runtime.session_factory() as session:
                outage = await NotificationRepository(session).outage(UUID(reader_id))
                return outage is not None and outage.offline_since is not None

        def mail_to_manager() -> list[Any]:
            return [e for e in providers.smtp.envelopes if e.rcpt_tos == [manager]]

        mails = await eventually(mail_to_manager)
        # Going offline is recorded at once and alerted only if it lasts past the grace
        # period (tests/notifications/test_outages.py follows it there).
        await eventually(recorded_offline)
    assert told[0]["notification"]["title"] == "방문객 출입"
    assert told[0]["data"]["category"] == "guest_passes"
    subjects = {str(mail.message["Subject"]) for mail in mails}
    assert subjects == {"배터리 부족"}
    battery = next(m.message for m in mails if str(m.message["Subject"]) == "배터리 부족")
    plain = battery.get_body(("plain",))
    assert plain is not None
    assert "(9%)" in plain.get_content()
