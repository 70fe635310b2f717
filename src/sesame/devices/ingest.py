"""Event ingestion: durable, exactly once, in batches.

Events are queued as they arrive and written in batches (up to ``max_batch`` events or
``max_delay`` seconds) in one transaction: the events (a repeated ``event_id`` of the same
device is skipped by the unique index), a ``device.event`` outbox message for each new
one. (``last_seen_at`` is left to the gateway's batched presence writes, so that an
event never waits for, or holds, its device's row lock.) Only after the commit does the
gateway tell each device, on ``events/ack``, which of its events are stored; a device
resends anything unacknowledged, so neither a crash nor a broker restart loses an
event, and resending never duplicates one.

Backpressure: the queue holds about ten seconds of what a database stores. When it is
full, an event is shed unacknowledged, and its device sends it again later: the devices'
own queues are the overflow, and nothing waits in memory here that would be resent
anyway. A resend of an event still in the queue is dropped at once (the original's
acknowledgement answers both), so a backlog never multiplies itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from cachetools import TTLCache
from prometheus_client import Counter

from sesame.devices import protocol
from sesame.devices.repository import DeviceRepository, EventRepository, StoredEvent
from sesame.kit.db import commit, write_intent
from sesame.kit.ids import new_id
from sesame.kit.logging import get_logger
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime

log = get_logger("sesame.ingest")

Publish = Callable[[str, bytes, int], Awaitable[None]]

# While a batch fills, the queue is looked at this often (not one wakeup per event).
GATHER_SECONDS = 0.005

SHED = Counter(
    "sesame_device_events_shed_total",
    "Device events not taken because the ingest queue was full (their devices resend them)",
)


@dataclass(frozen=True)
class Arrival:
    device_id: UUID
    event: protocol.DeviceEvent


class EventIngestor:
    def __init__(
        self,
        runtime: Runtime,
        publish: Publish,
        *,
        max_batch: int = 500,
        max_delay: float = 0.05,
        max_queue: int = 10_000,
    ) -> None:
        self.runtime = runtime
        self._publish = publish
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._queue: asyncio.Queue[Arrival] = asyncio.Queue(maxsize=max_queue)
        self._queued: set[tuple[UUID, UUID]] = set()  # in the queue or being stored
        self._shedding = False
        # device -> (partner, site, active); a device's partner and site never change.
        self._routing: TTLCache[UUID, tuple[UUID, UUID, bool]] = TTLCache(100_000, ttl=60)
        self._task: asyncio.Task[None] | None = None
        self.on_seen: Callable[[set[UUID]], None] = lambda devices: None
        self.stored = 0
        self.duplicates = 0
        self.resends_absorbed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def forget(self, device_id: UUID) -> None:
        self._routing.pop(device_id, None)

    def shed(self) -> None:
        """Count an event not taken (the queue is full); its device resends it later."""
        SHED.inc()
        if not self._shedding:  # once per overload, not once per event
            log.warning("event_queue_full", queued=self._queue.qsize())
            self._shedding = True

    async def submit(self, device_id: UUID, event: protocol.DeviceEvent) -> None:
        """Queue an event; a full queue sheds it (the device resends it later)."""
        self.offer(device_id, event)

    def offer(self, device_id: UUID, event: protocol.DeviceEvent) -> None:
        """``submit`` without awaiting."""
        key = (device_id, event.event_id)
        if key in self._queued:
            self.resends_absorbed += 1
            return
        try:
            self._queue.put_nowait(Arrival(device_id, event))
        except asyncio.QueueFull:
            self.shed()
            return
        self._queued.add(key)
        self._shedding = False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_delay
            while True:  # gather more: what is queued now, then again every few ms
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                remaining = deadline - loop.time()
                if len(batch) >= self.max_batch or remaining <= 0:
                    break
                await asyncio.sleep(min(remaining, GATHER_SECONDS))
            try:
                await self.flush(batch)
            except Exception as exc:  # not acknowledged: the devices will send them again
                log.warning("event_batch_failed", events=len(batch), error_type=type(exc).__name__)
                await asyncio.sleep(0.5)
            finally:
                self._queued.difference_update((a.device_id, a.event.event_id) for a in batch)

    async def flush(self, batch: list[Arrival]) -> None:
        now = self.runtime.clock.now()
        routing = await self._route({arrival.device_id for arrival in batch})
        rows = []
        acks: dict[UUID, list[UUID]] = defaultdict(list)
        seen: set[tuple[UUID, UUID]] = set()
        for arrival in batch:
            route = routing.get(arrival.device_id)
            if route is None or not route[2]:
                continue
            acks[arrival.device_id].append(arrival.event.event_id)
            key = (arrival.device_id, arrival.event.event_id)
            if key in seen:
                continue
            seen.add(key)
            partner_id, site_id, _ = route
            rows.append(
                {
                    "id": new_id(),
                    "partner_id": partner_id,
                    "site_id": site_id,
                    "device_id": arrival.device_id,
                    "event_id": arrival.event.event_id,
                    "type": arrival.event.type,
                    "occurred_at": arrival.event.occurred_at,
                    "received_at": now,
                    "data": arrival.event.data,
                }
            )
        if rows:
            with write_intent():
                async with self.runtime.session_factory() as session:
                    new = await EventRepository(session).insert_new(rows)
                    await outbox.append(session, [_event_message(row) for row in new])
                    await self.runtime.device_hooks.stored(session, new)
                    await commit(session)
            self.stored += len(new)
            self.duplicates += len(batch) - len(new)
        self.on_seen(set(acks))
        for device_id, event_ids in acks.items():
            ack = protocol.EventsAck(event_ids=list(dict.fromkeys(event_ids)))
            try:
                await self._publish(
                    protocol.topic(device_id, protocol.Channel.EVENTS_ACK), protocol.encode(ack), 1
                )
            except Exception as exc:  # the device resends; the duplicate is harmless
                log.info(
                    "event_ack_failed", device_id=str(device_id), error_type=type(exc).__name__
                )

    async def _route(self, device_ids: set[UUID]) -> dict[UUID, tuple[UUID, UUID, bool]]:
        known = {d: self._routing[d] for d in device_ids if d in self._routing}
        missing = sorted(device_ids - set(known))
        if missing:
            async with self.runtime.read_session_factory() as session:
                loaded = await DeviceRepository(session).routing(missing)
            for device_id, route in loaded.items():
                self._routing[device_id] = route
            known.update(loaded)
        return known


def _event_message(row: StoredEvent) -> dict[str, Any]:
    """The ``device.event`` outbox message of a stored event: ``outbox.message``'s, built
    directly (the values are already what JSON holds: ids, a time, the device's JSON)."""
    return {
        "topic": "device.event",
        "partner_id": row.partner_id,
        "aggregate_id": row.device_id,
        "payload": {
            "device_id": str(row.device_id),
            "site_id": str(row.site_id),
            "event_id": str(row.event_id),
            "record_id": str(row.id),
            "type": row.type,
            "occurred_at": row.occurred_at.isoformat(),
            "data": row.data,
        },
    }
