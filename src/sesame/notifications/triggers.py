"""What each domain event means for whom: outbox rows become per-destination deliveries.

| event | who | category |
|---|---|---|
| a doorbell rang (`device.event`, `doorbell_rang`) | the household of the door's unit | doorbell |
| `key.issued`, `key.shared` | the key's holder | keys |
| `key.revoked` | the key's holder | security (critical) |
| a guest pass used (`key.used` of a guest key) | the resident who issued it | guest_passes |
| `device.offline` (debounced: `outages`), low battery, clock drift | site managers | devices |
| `device.unexpected_result` (a result of no command sent) | the site's managers | security |
| `ops.alert` | platform administrators (and the platform's webhooks) | operations (critical) |
| `person.invited` (a resident added) | the resident, by SMS | invitation (critical) |

Besides, every event of a partner goes to the partner's webhook endpoints whose filter
takes its topic. Each delivery's transaction id is derived from the outbox id and the
destination, so routing the same event again adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sesame.models import DeliveryStatus, KeyKind
from sesame.notifications import catalog
from sesame.notifications.repository import NotificationRepository, Recipient


@dataclass
class Intent:
    """Tell these recipients this, in their language."""

    recipients: list[Recipient]
    template: str
    category: str
    fields: dict[str, Any]
    data: dict[str, str] = field(default_factory=dict)
    site_id: UUID | None = None
    # Sent by SMS to the person's own phone, not to their registered destinations (a
    # person just added has none).
    by_sms: bool = False


async def intents_for(repository: NotificationRepository, row: Any, today: Any) -> list[Intent]:
    topic, payload = row.topic, row.payload or {}
    if topic == "device.event":
        return await _device_event(repository, row, payload, today)
    if topic == "device.clock_drift":  # device.offline: see ``outages``, debounced
        return await _for_managers(
            repository,
            row,
            payload,
            topic,
            {"offset": round(abs(int(payload.get("offset_ms") or 0)) / 1000, 1)},
        )
    if topic == "device.unexpected_result":
        return await _for_managers(repository, row, payload, topic, {}, category="security")
    if topic in ("key.issued", "key.shared", "key.revoked") and payload.get("person_id"):
        people = await repository.people([UUID(payload["person_id"])])
        site = await repository.site_name(UUID(payload["site_id"]))
        category = "security" if topic == "key.revoked" else "keys"
        template = "key.revoked" if topic == "key.revoked" else "key.shared"
        return [
            Intent(
                people,
                template,
                category,
                {"site": site},
                _ids(payload, "key"),
                _uuid(payload, "site_id"),
            )
        ]
    if topic == "key.used" and payload.get("kind") == KeyKind.GUEST.value:
        key = await repository.key(row.aggregate_id)
        if key is None or key.issued_by_person_id is None:
            return []
        place = (
            await repository.place(UUID(payload["device_id"])) if payload.get("device_id") else None
        )
        fields = {"place": place["place"] if place else await repository.site_name(key.site_id)}
        people = await repository.people([key.issued_by_person_id])
        return [
            Intent(
                people, "guest_pass.used", "guest_passes", fields, _ids(payload, "key"), key.site_id
            )
        ]
    if topic == "person.invited" and row.aggregate_id is not None:
        site_id = _uuid(payload, "site_id")
        site = await repository.site_name(site_id) if site_id else ""
        return [
            Intent(
                await repository.people([row.aggregate_id]),
                "resident.invited",
                "invitation",
                {"site": site},
                {"person_id": str(row.aggregate_id)},
                site_id,
                by_sms=True,
            )
        ]
    if topic == "ops.alert":
        return [
            Intent(
                await repository.platform_admins(),
                "ops.alert",
                "operations",
                {"name": payload.get("name"), "message": payload.get("message")},
                {"alert": str(payload.get("name", ""))},
            )
        ]
    return []


async def _device_event(
    repository: NotificationRepository, row: Any, payload: dict[str, Any], today: Any
) -> list[Intent]:
    kind = payload.get("type")
    if kind == "doorbell_rang":
        place = await repository.place(row.aggregate_id)
        if place is None or place["unit_id"] is None:
            return []
        people = await repository.household_of_unit(place["unit_id"], today)
        return [
            Intent(
                people,
                "doorbell.rang",
                "doorbell",
                place,
                _ids(payload, "device"),
                _uuid(payload, "site_id"),
            )
        ]
    if kind == "low_battery":
        data = payload.get("data") or {}
        level = data.get("level", data.get("battery", ""))
        return await _for_managers(repository, row, payload, "device.low_battery", {"level": level})
    return []


async def _for_managers(
    repository: NotificationRepository,
    row: Any,
    payload: dict[str, Any],
    template: str,
    extra: dict[str, Any],
    *,
    category: str = "devices",
) -> list[Intent]:
    site_id = _uuid(payload, "site_id")
    if site_id is None or row.partner_id is None:
        return []
    place = await repository.place(row.aggregate_id) or {}
    managers = await repository.site_managers(row.partner_id, site_id)
    return [
        Intent(managers, template, category, {**place, **extra}, _ids(payload, "device"), site_id)
    ]


def _uuid(payload: dict[str, Any], name: str) -> UUID | None:
    value = payload.get(name)
    return UUID(value) if value else None


def _ids(payload: dict[str, Any], *names: str) -> dict[str, str]:
    return {
        f"{name}_id": str(payload[f"{name}_id"])
        for name in names
        if payload.get(f"{name}_id") is not None
    }


async def deliveries_for(
    repository: NotificationRepository,
    intent: Intent,
    *,
    source: str,
    event_type: str,
    now: datetime,
    outbox_id: int | None = None,
) -> list[dict[str, Any]]:
    """One delivery per destination of each recipient that their preferences allow."""
    recipients = intent.recipients
    if not recipients:
        return []
    destinations = await repository.destinations_of(recipients)
    critical = catalog.CATEGORIES[intent.category].critical
    preferences = {} if critical else await repository.preferences_of(recipients, intent.category)
    rows: list[dict[str, Any]] = []
    for recipient in recipients:
        choice = preferences.get(recipient.id)
        if choice is not None and not choice.enabled:
            continue
        channels = set(choice.channels) if choice is not None and choice.channels else None
        locale = catalog.locale_of(recipient.locale)
        title, body = catalog.render(intent.template, locale, intent.fields)
        places: list[tuple[str, UUID | None]] = [
            (str(d.kind), d.id) for d in destinations.get(recipient.id, [])
        ]
        if intent.by_sms:
            places = [("sms", None)] if recipient.kind == "person" else []
        elif recipient.email and not any(kind == "email" for kind, _ in places):
            places.append(("email", None))  # a staff member's account address
        for channel, destination_id in places:
            if channels is not None and channel not in channels:
                continue
            target = (
                destination_id.hex if destination_id else f"{recipient.kind}-{recipient.id.hex}"
            )
            rows.append(
                delivery_row(
                    transaction_id=f"{source}-{target}",
                    partner_id=recipient.partner_id,
                    site_id=intent.site_id,
                    event_type=event_type,
                    category=intent.category,
                    channel=channel,
                    person_id=recipient.id if recipient.kind == "person" else None,
                    staff_id=recipient.id if recipient.kind == "staff" else None,
                    destination_id=destination_id,
                    locale=locale,
                    title=title,
                    body=body,
                    data={**intent.data, "event_type": event_type},
                    now=now,
                    outbox_id=outbox_id,
                )
            )
    return rows


def webhook_rows(endpoints: Sequence[Any], row: Any, *, now: datetime) -> list[dict[str, Any]]:
    """The event for each endpoint whose filter takes its topic."""
    payload = row.payload or {}
    return [
        delivery_row(
            transaction_id=f"o{row.id}-{endpoint.id.hex}",
            partner_id=row.partner_id,
            site_id=_uuid(payload, "site_id"),
            event_type=row.topic,
            category="webhooks",
            channel="webhook",
            webhook_endpoint_id=endpoint.id,
            locale=catalog.DEFAULT_LOCALE,
            title=row.topic,
            body="",
            data={
                "id": str(row.id),
                "aggregate_id": str(row.aggregate_id) if row.aggregate_id else None,
                **payload,
            },
            now=now,
            outbox_id=row.id,
        )
        for endpoint in endpoints
        if not endpoint.event_types or row.topic in endpoint.event_types
    ]


def delivery_row(*, now: datetime, **values: Any) -> dict[str, Any]:
    base = {
        "partner_id": None,
        "site_id": None,
        "person_id": None,
        "staff_id": None,
        "destination_id": None,
        "webhook_endpoint_id": None,
        "campaign_id": None,
        "outbox_id": None,
        "status": DeliveryStatus.QUEUED,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }
    return {**base, **values}
