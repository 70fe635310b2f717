"""Device-offline alerts, debounced: a flapping device sends one message, not hundreds.

- **Recording.** A ``device.offline`` event only records an outage (in the router's
  transaction): when the device went offline last, and one flap more since the last
  alert. ``device.online`` clears what was pending: it did not stay offline.
- **Alerting.** Every minute (the alerts job) an outage alerts the site's managers once
  its device has stayed offline ``SESAME_NOTIFY_OFFLINE_GRACE_SECONDS`` since its latest
  disconnection — and only if the device's previous alert is older than
  ``SESAME_NOTIFY_OFFLINE_WINDOW_SECONDS``; otherwise it waits for the window to pass
  (still offline by then: one alert, summarising the flaps).
- A delivery's transaction id names the device and the disconnection it reports, so a
  repeated sweep adds nothing.

Partners' webhooks still receive every ``device.offline`` event: systems, unlike people,
want each one.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sesame.kit.db import commit, write_intent
from sesame.models import DeviceOutage
from sesame.notifications.repository import NotificationRepository
from sesame.notifications.triggers import Intent, deliveries_for
from sesame.runtime import Runtime

OFFLINE, ONLINE = "device.offline", "device.online"


def _when(row: Any) -> datetime:
    at = (row.payload or {}).get("at")
    if isinstance(at, str):
        try:
            return datetime.fromisoformat(at)
        except ValueError:
            pass
    moment: datetime = row.created_at
    return moment


async def record(repository: NotificationRepository, row: Any) -> None:
    """Note a device going offline or coming back (an outbox row of either topic)."""
    if row.topic not in (OFFLINE, ONLINE) or row.aggregate_id is None:
        return
    outage = await repository.outage(row.aggregate_id)
    if row.topic == ONLINE:
        if outage is not None:
            outage.offline_since = None
        return
    if outage is None:
        if not await repository.device_exists(row.aggregate_id):
            return  # removed since: nothing to alert about
        outage = DeviceOutage(device_id=row.aggregate_id, flaps=0)
        repository.session.add(outage)
        await repository.session.flush()  # found by the next event of the same batch
    at = _when(row)
    outage.flaps += 1
    outage.offline_since = at
    outage.first_offline_at = outage.first_offline_at or at


async def alert_due(runtime: Runtime) -> int:
    """Alert the managers of devices offline past the grace period (at most one alert per
    device per window); returns how many devices were alerted about."""
    settings = runtime.settings
    now = runtime.clock.now()
    grace = timedelta(seconds=settings.notify_offline_grace_seconds)
    window = timedelta(seconds=settings.notify_offline_window_seconds)
    alerted = 0
    with write_intent():
        async with runtime.session_factory() as session:
            repository = NotificationRepository(session)
            deliveries: list[dict[str, Any]] = []
            for outage, online, partner_id, site_id in await repository.due_outages(
                offline_before=now - grace, alerted_before=now - window
            ):
                since = outage.offline_since
                if online or since is None:
                    outage.offline_since = None  # back already; its event is on the way
                    continue
                place = await repository.place(outage.device_id) or {}
                managers = await repository.site_managers(partner_id, site_id)
                flapping = outage.flaps > 1
                intent = Intent(
                    managers,
                    "device.flapping" if flapping else "device.offline",
                    "devices",
                    {**place, "flaps": outage.flaps},
                    {"device_id": str(outage.device_id), "flaps": str(outage.flaps)},
                    site_id,
                )
                deliveries += await deliveries_for(
                    repository,
                    intent,
                    source=f"offline-{outage.device_id.hex}-{int(since.timestamp())}",
                    event_type=OFFLINE,
                    now=now,
                )
                outage.last_alert_at, outage.offline_since = now, None
                outage.flaps, outage.first_offline_at = 0, None
                alerted += 1
            await repository.add_deliveries(deliveries)
            await commit(session)
    if alerted and runtime.notifier is not None:
        runtime.notifier.queued()
    return alerted
