"""The router: domain events from the outbox become deliveries.

Any process may run it; one at a time routes (an advisory lock on PostgreSQL, the write
lock on SQLite). Each step reads the outbox after the stored cursor — in commit order,
see ``sesame.outbox`` — and in *one* transaction inserts the deliveries and moves the
cursor: a crash before the commit routes nothing, after it everything, and a delivery's
transaction id is unique, so routing an event twice adds nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prometheus_client import Counter, Gauge

from sesame.kit.db import commit, write_intent
from sesame.kit.loop import keep_running
from sesame.notifications import outages
from sesame.notifications.repository import NotificationRepository
from sesame.notifications.triggers import deliveries_for, intents_for, webhook_rows
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime

ROUTER_LOCK = 0x5E5A_0707  # pg advisory lock key: "sesame notifications router"
BATCH = 200
ROUTE_SETTLE_SECONDS = 0.1
ROUTED = Counter("sesame_notifications_routed_total", "Outbox events routed to deliveries")
QUEUED = Counter("sesame_notifications_queued_total", "Deliveries queued", ["channel"])
LAG = Gauge("sesame_notifications_router_lag_seconds", "Age of the oldest unrouted event")


async def route_batch(
    runtime: Runtime, limit: int = BATCH, on_queued: Callable[[], None] | None = None
) -> int:
    """One step: route what the outbox holds after the cursor, up to ``limit`` events.
    Returns how many events were read (0: nothing to do, or another process routes).
    ``on_queued`` is called once the step has queued deliveries (only then: most events
    are for nobody, and a sender woken for nothing would claim nothing)."""
    # A read first: the router also looks every second for other processes' events, and
    # most of those looks find nothing; they take no write lock (SQLite has one, which
    # the command path needs) and no advisory lock.
    async with runtime.read_session_factory() as reader:
        cursor = await NotificationRepository(reader).cursor()
        if not await outbox.read_after(reader, cursor, limit=1, columns=["id"]):
            LAG.set(0)
            return 0
    with write_intent():
        async with runtime.session_factory() as session:
            repository = NotificationRepository(session)
            if not await repository.try_lock(ROUTER_LOCK):
                return 0
            state = await repository.state()
            rows = await outbox.read_after(session, state.outbox_cursor, limit=limit)
            if not rows:
                LAG.set(0)
                return 0
            now = runtime.clock.now()
            today = now.date()
            deliveries: list[dict[str, Any]] = []
            endpoints: dict[UUID | None, Any] = {}
            for row in rows:
                await outages.record(repository, row)  # alerted later, if it lasts
                for intent in await intents_for(repository, row, today):
                    deliveries += await deliveries_for(
                        repository,
                        intent,
                        source=f"o{row.id}",
                        event_type=intent.template,
                        now=now,
                        outbox_id=row.id,
                    )
                owner = row.partner_id if row.topic != "ops.alert" else None
                if owner not in endpoints:
                    endpoints[owner] = await repository.webhook_endpoints(owner)
                deliveries += webhook_rows(endpoints[owner], row, now=now)
            await repository.add_deliveries(deliveries)
            state.outbox_cursor = rows[-1].id
            state.updated_at = now
            await commit(session)
    LAG.set(max(0.0, (now - rows[-1].created_at).total_seconds()) if len(rows) == limit else 0)
    ROUTED.inc(len(rows))
    for delivery in deliveries:
        QUEUED.labels(delivery["channel"]).inc()
    if deliveries and on_queued is not None:
        on_queued()
    return len(rows)


async def run_router(runtime: Runtime, wake: asyncio.Event, on_queued: Callable[[], None]) -> None:
    """Route for as long as the process lives: at once when this process commits events
    (``wake``), else every second for other processes' events."""

    async def drain() -> None:
        while (routed := await route_batch(runtime, on_queued=on_queued)) > 0:
            if routed < BATCH:
                break

    # Woken, it waits ROUTE_SETTLE_SECONDS first: an open commits twice (its request and
    # its result), and at 20 ms the router ran about every other open, in the middle of
    # the next one (measured: 3 ms of each sequential open's 17 ms). A notification is
    # not what the door waits for; a tenth of a second later costs nobody anything.
    await keep_running(
        drain, wake, name="notifications.router", settle_seconds=ROUTE_SETTLE_SECONDS
    )
