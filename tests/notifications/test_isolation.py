"""Another tenant's webhook endpoints, campaigns, deliveries and destinations are 404s;
roles without the notifications grant get 403."""

from __future__ import annotations

from uuid import UUID

from sesame.kit.db import write_intent
from sesame.notifications.repository import NotificationRepository
from sesame.notifications.triggers import delivery_row
from sesame.runtime import Runtime
from tests.support import Api, World


async def test_another_partners_notification_objects_are_not_found(
    api: Api, world: World, other_world: World, runtime: Runtime
) -> None:
    theirs = other_world.tokens["partner_admin"]
    mine = world.tokens["partner_admin"]
    endpoint = await api.create(
        "/v1/webhook-endpoints", theirs, {"url": "https://partner.example/hooks"}
    )
    campaign = await api.create(
        "/v1/notifications/campaigns",
        theirs,
        {
            "site_id": other_world.site_id,
            "content": {"ko": {"title": "안내", "body": "본문"}},
            "send_at": "2099-01-01T00:00:00+09:00",
        },
    )
    with write_intent():
        async with runtime.session_factory() as session:
            now = runtime.clock.now()
            row = delivery_row(
                transaction_id=f"isolation-{campaign['id']}",
                partner_id=UUID(other_world.partner_id),
                site_id=UUID(other_world.site_id),
                event_type="campaign",
                category="announcements",
                channel="fcm",
                locale="ko",
                title="안내",
                body="본문",
                data={},
                now=now,
            )
            await NotificationRepository(session).add_deliveries([row])
            await session.commit()
    theirs_listed = await api.get(
        "/v1/notifications/deliveries", token=theirs, params={"limit": 200}
    )
    delivery_id = next(
        d["id"]
        for d in theirs_listed.json()["items"]
        if d["transaction_id"] == f"isolation-{campaign['id']}"
    )
    for method, path in (
        ("GET", f"/v1/webhook-endpoints/{endpoint['id']}"),
        ("PATCH", f"/v1/webhook-endpoints/{endpoint['id']}"),
        ("DELETE", f"/v1/webhook-endpoints/{endpoint['id']}"),
        ("POST", f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret"),
        ("GET", f"/v1/notifications/campaigns/{campaign['id']}"),
        ("POST", f"/v1/notifications/campaigns/{campaign['id']}/cancel"),
        ("GET", f"/v1/notifications/deliveries/{delivery_id}"),
    ):
        body = {"description": "mine now"} if method == "PATCH" else None
        response = await api.request(method, path, token=mine, json=body)
        assert response.status_code == 404, (method, path, response.text)
    listed = await api.get("/v1/notifications/deliveries", token=mine, params={"limit": 200})
    assert delivery_id not in {d["id"] for d in listed.json()["items"]}
    foreign_site = await api.post(
        "/v1/notifications/campaigns",
        token=mine,
        json={"site_id": other_world.site_id, "content": {"en": {"title": "t", "body": "b"}}},
    )
    assert foreign_site.status_code == 404
    # Theirs are untouched.
    kept = await api.get(f"/v1/webhook-endpoints/{endpoint['id']}", token=theirs)
    assert kept.json()["description"] is None


async def test_roles_without_the_grant_are_refused(api: Api, world: World) -> None:
    installer = world.tokens["installer"]
    denied = await api.get("/v1/notifications/campaigns", token=installer)
    assert denied.status_code == 403
    manager = world.tokens["site_manager"]
    site_wide = await api.post(
        "/v1/webhook-endpoints", token=manager, json={"url": "https://partner.example/h"}
    )
    assert site_wide.status_code == 403  # endpoints are partner-wide
    api_key = world.tokens["api_key"]
    mine = await api.get("/v1/me/notification-destinations", token=api_key)
    assert mine.status_code == 403  # destinations belong to people and staff, not keys
