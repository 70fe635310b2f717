"""Device clocks: the offset and round trip of each device's clock against the server's,
from the four timestamps of an NTP-style exchange (``docs/protocol.md``, "Time").

A device asks for the time on every connection and periodically (``time/request``),
the gateway answers with its receive and send times (``time/response``), and the device
reports all four (``time/report``). The server computes, as NTP does,

    offset = ((t1 - t2) + (t4 - t3)) / 2      (the device clock minus the server's)
    delay  = (t4 - t1) - (t3 - t2)            (the network round trip)

and keeps both on the device. Beyond ``SESAME_CLOCK_DRIFT_THRESHOLD_SECONDS`` (2 s) the
device gets a ``clock_drift`` warning and a ``device.clock_drift`` event, and is sent
``sync_clock`` with the correction to apply (``adjust_ms``, relative, so a command that
waits in the queue still corrects exactly); its next exchange clears the warning. A reader
with a wrong clock accepts expired credentials or refuses valid ones, so this matters.
"""

from __future__ import annotations

from uuid import UUID

from prometheus_client import Histogram

from sesame.devices import health, protocol
from sesame.devices.repository import DeviceRepository
from sesame.devices.service import engine_of
from sesame.kit.db import commit, write_intent
from sesame.kit.logging import get_logger
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime

log = get_logger("sesame.devices.clock")

MAX_DELAY_MS = 10_000  # a round trip longer than this says nothing about the clock
OFFSETS = Histogram(
    "sesame_device_clock_offset_seconds",
    "Absolute device clock offsets measured",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 30, 300, 3600),
)


def offset_and_delay(report: protocol.TimeReport) -> tuple[int, int]:
    """The device clock's offset from the server's and the round trip, in ms."""
    offset = ((report.t1_ms - report.t2_ms) + (report.t4_ms - report.t3_ms)) / 2
    delay = (report.t4_ms - report.t1_ms) - (report.t3_ms - report.t2_ms)
    return round(offset), delay


async def on_report(runtime: Runtime, device_id: UUID, report: protocol.TimeReport) -> None:
    offset, delay = offset_and_delay(report)
    if not 0 <= delay <= MAX_DELAY_MS:
        log.info("clock_sample_ignored", device_id=str(device_id), delay_ms=delay)
        return
    OFFSETS.observe(abs(offset) / 1000)
    threshold = int(runtime.settings.clock_drift_threshold_seconds * 1000)
    sent = None
    with write_intent():
        async with runtime.session_factory() as session:
            device = await DeviceRepository(session).locked(device_id)
            if device is None or device.credential_hash is None:
                return
            now = runtime.clock.now()
            device.clock_offset_ms, device.clock_delay_ms = offset, delay
            device.clock_checked_at = now
            if health.clock_checked(device, offset, threshold, now):
                await outbox.append(
                    session,
                    [
                        outbox.message(
                            "device.clock_drift",
                            partner_id=device.partner_id,
                            aggregate_id=device.id,
                            site_id=device.site_id,
                            offset_ms=offset,
                            delay_ms=delay,
                        )
                    ],
                )
                log.warning("device_clock_drift", device_id=str(device_id), offset_ms=offset)
            if abs(offset) > threshold:
                sent = await engine_of(runtime).submit(
                    session,
                    device,
                    "sync_clock",
                    {"adjust_ms": -offset},  # relative: late delivery does not matter
                    ttl_seconds=10,
                    requested_by="clock-sync",
                    locked=True,
                )
            await commit(session)
    if sent is not None:
        await engine_of(runtime).deliver(sent, device_id)
