"""Device events that concern keys: readers' own decisions go to the access log.

Runs inside the event ingestion's transaction (a device hook), so an event and its access
log entry are stored together, exactly once. A reader reports ``access_granted`` and
``access_denied`` with ``method``, ``key_id``, ``credential_id`` and ``reason`` in the
event's data; a granted offline admission also counts as a use of the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.devices.protocol import EventType
from sesame.devices.repository import DeviceRepository
from sesame.keys import pins
from sesame.keys.repository import AccessEventRepository, KeyRepository, PinCodeRepository
from sesame.keys.service import key_message
from sesame.models import AccessEvent, AccessMethod, AccessResult
from sesame.outbox import repository as outbox

ACCESS_TYPES = {
    EventType.ACCESS_GRANTED.value: AccessResult.GRANTED,
    EventType.ACCESS_DENIED.value: AccessResult.DENIED,
}


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value)) if value else None
    except ValueError:
        return None


def _method(value: Any) -> AccessMethod:
    # The gateway refuses an access event whose method is not documented
    # (``protocol.access_method_refusal``): every stored one names a known method.
    return AccessMethod(value)


async def on_events(session: AsyncSession, rows: Sequence[Any]) -> None:
    keys = KeyRepository(session)
    devices = DeviceRepository(session)
    entrances: dict[UUID, UUID | None] = {}
    entries = []
    messages = []
    for row in rows:
        if row.type == EventType.PIN_CHANGED.value:
            await pins.on_keypad_change(session, row)
            continue
        result = ACCESS_TYPES.get(row.type)
        data = row.data or {}
        if result is None or data.get("method") == "remote":
            continue  # remote opens are logged by the API, with their action attempt
        key_id = _uuid(data.get("key_id"))
        key = await keys.by_id(key_id) if key_id else None
        if key is not None and key.site_id != row.site_id:
            key = None  # a reader may only speak of its own site's keys
        pin_id = _uuid(data.get("pin_code_id"))
        if data.get("method") == "pin" and data.get("slot") is not None and key is None:
            pin = next(
                (
                    p
                    for p in await PinCodeRepository(session).on_device(row.device_id)
                    if p.slot == data.get("slot")
                ),
                None,
            )
            if pin is not None:
                pin_id = pin.id
                key = await keys.by_id(pin.key_id) if pin.key_id else None
        if row.device_id not in entrances:
            device = await devices.by_id(row.device_id)
            entrances[row.device_id] = device.entrance_id if device else None
        entries.append(
            AccessEvent(
                partner_id=row.partner_id,
                site_id=row.site_id,
                at=row.occurred_at,
                result=result,
                method=_method(data.get("method")),
                reason=str(data.get("reason") or "") or None,
                key_id=key.id if key else None,
                person_id=key.person_id if key else None,
                entrance_id=entrances[row.device_id],
                device_id=row.device_id,
                credential_id=_uuid(data.get("credential_id")),
                pin_code_id=pin_id,
                data={"event_id": str(row.event_id)},
            )
        )
        if key is not None and result is AccessResult.GRANTED:
            await keys.spend_use(key.id)
            messages.append(
                key_message(
                    "key.used",
                    key,
                    method=data.get("method"),
                    device_id=row.device_id,
                    credential_id=data.get("credential_id"),
                    occurred_at=row.occurred_at,
                    actor={"kind": "device", "id": str(row.device_id)},
                )
            )
    if entries:
        await AccessEventRepository(session).add_many(entries)
    await outbox.append(session, messages)
