"""A thousand devices on the embedded broker: connection time, memory, heartbeats.

1,000 entrance readers are provisioned through the API, then simulated in two processes
(500 each) against ``sesame serve`` with its embedded broker (on SQLite, the default
installation). Measured: seconds from the first connection attempt until the platform
has every device online, the server's resident memory (API, gateway and broker in one
process) before and after, and heartbeats handled per second at a 5-second interval.

Last line: one JSON object with ``devices_connected``, ``connect_all_s``, ``rss_mb``,
``heartbeats_per_s``.

Usage: ``python bench/device_fleet.py [--devices 1000] [--heartbeat 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import record, rss_mb, run, stack, step
from sesame.simulators import simulator, start_fleet


def _run_fleet(
    devices: list[dict[str, str]], heartbeat: float, seconds: float, report: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    async def run() -> None:
        fleet = [
            simulator(
                d["kind"], d["device_id"], d["password"], d["url"], heartbeat_interval=heartbeat
            )
            for d in devices
        ]
        started = time.monotonic()
        await start_fleet(fleet, concurrency=50)
        report.put(
            {
                "connected": sum(d.connected.is_set() for d in fleet),
                "seconds": time.monotonic() - started,
            }
        )
        await asyncio.sleep(seconds)
        for device in fleet:
            await device.stop()

    asyncio.run(run())


async def _online(url: str) -> int:
    from sqlalchemy import func, select

    from sesame.kit.db import create_engine
    from sesame.models import Device

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return int(
                (
                    await connection.execute(
                        select(func.count()).select_from(Device).where(Device.online.is_(True))
                    )
                ).scalar_one()
            )
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    step("starting the stack")
    with stack(broker="embedded", database="sqlite") as running:
        running.start_server()
        baseline_rss = rss_mb(running.server_pid)
        record()["rss_mb_before_devices"] = baseline_rss
        step(f"provisioning {args.devices} devices")
        devices = running.provision("entrance_reader", args.devices)
        report: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        halves = [devices[: len(devices) // 2], devices[len(devices) // 2 :]]
        hold = 120 + args.window
        started = time.monotonic()
        fleets = [
            multiprocessing.Process(target=_run_fleet, args=(half, args.heartbeat, hold, report))
            for half in halves
        ]
        step("connecting the fleet")
        for fleet in fleets:
            fleet.start()
        connected = sum(report.get(timeout=300)["connected"] for _ in fleets)
        record()["devices_connected"] = connected
        online = 0
        while time.monotonic() - started < 120:
            online = asyncio.run(_online(running.database_url))  # the demo devices stay offline
            if online >= args.devices:
                break
            time.sleep(0.25)
        connect_all = time.monotonic() - started
        record().update(devices_online_in_platform=online, connect_all_s=round(connect_all, 2))
        step("heartbeats")
        beats_before = running.metric("sesame_mqtt_messages_total", channel="heartbeat")
        time.sleep(args.window)
        beats = running.metric("sesame_mqtt_messages_total", channel="heartbeat") - beats_before
        rss = rss_mb(running.server_pid)
        for fleet in fleets:
            fleet.terminate()
    figures = record()
    figures |= {
        "devices_connected": connected,
        "devices_online_in_platform": online,
        "connect_all_s": round(connect_all, 2),
        "rss_mb": rss,
        "rss_mb_before_devices": baseline_rss,
        "kb_per_device": round((rss - baseline_rss) * 1024 / max(connected, 1), 1),
        "heartbeats_per_s": round(beats / args.window, 1),
        "heartbeats_expected_per_s": round(args.devices / args.heartbeat, 1),
    }
    print(
        f"{connected} devices connected, all online in {connect_all:.1f} s; server RSS "
        f"{rss} MB ({baseline_rss} MB before); {figures['heartbeats_per_s']} heartbeats/s "
        f"handled",
        flush=True,
    )
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    run(main)
