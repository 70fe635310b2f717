"""Command round trip: HTTP open → device → result → HTTP answer, idle and under load.

For each broker (the embedded one, and Mosquitto as ``sesame broker config`` writes it)
it measures, against a real ``sesame serve`` on SQLite:

- ``POST /v1/entrances/{id}/open?wait=5`` answered with the simulated reader's result,
  one request at a time (p50/p99 in ms);
- the same while 1,000 events per second stream in from other simulated devices
  (a second process), each one stored and acknowledged;
- the floor: a QoS 1 round trip between two plain MQTT clients through the same broker.

The last line is one JSON object; ``open_*``/``loaded_*``/``floor_*`` keys without a
broker suffix are the embedded broker's.

Usage: ``python bench/command_rtt.py [--requests 300] [--events-per-second 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import re
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Stack, mqtt_floor, percentile, record, run, stack, step
from sesame.simulators import simulator, start_fleet


def _load(
    devices: list[dict[str, str]], per_second: float, seconds: float, report: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    """Child process: doorbells emitting events at ``per_second`` in total."""

    async def run() -> None:
        fleet = [
            simulator(d["kind"], d["device_id"], d["password"], d["url"], heartbeat_interval=30)
            for d in devices
        ]
        await start_fleet(fleet)
        report.put("ready")
        sent = 0
        started = time.monotonic()
        interval = 0.01
        while time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * per_second) - sent
            for i in range(due):
                fleet[(sent + i) % len(fleet)].emit("door_opened")
            sent += max(due, 0)
            await asyncio.sleep(interval)
        acked = sum(len(d.acked_events) for d in fleet)
        report.put({"sent": sent, "acked": acked, "seconds": time.monotonic() - started})
        for device in fleet:
            await device.stop()

    asyncio.run(run())


async def _open_many(
    running: Stack, entrance_id: str, reader: dict[str, str], requests: int
) -> list[float]:
    device = simulator(reader["kind"], reader["device_id"], reader["password"], reader["url"])
    await device.start()
    await asyncio.sleep(1.0)  # let the platform see it online
    samples = []
    async with httpx.AsyncClient(
        base_url=running.url, headers=running.headers(), timeout=10
    ) as client:
        for n in range(requests + 20):
            started = time.perf_counter()
            response = await client.post(
                f"/v1/entrances/{entrance_id}/open", params={"wait": 5}, json={"duration_s": 1}
            )
            elapsed = (time.perf_counter() - started) * 1000
            if response.json().get("status") != "success":
                raise RuntimeError(f"open failed: {response.text}")
            if n >= 20:  # warm-up excluded
                samples.append(elapsed)
    await device.stop()
    return samples


def measure(
    broker: str, database: str, requests: int, events_per_second: float
) -> dict[str, float]:
    figures: dict[str, float] = {}
    suffix = ("" if broker == "embedded" else "_mosquitto") + (
        "" if database == "sqlite" else "_pg"
    )
    step(f"{broker}/{database}: starting the stack")
    with stack(broker=broker, database=database) as running:
        running.start_server()
        entrance_id = re.search(r"/v1/entrances/([0-9a-f-]+)/open", running.demo_output).group(1)  # type: ignore[union-attr]
        reader = next(d for d in running.demo_devices() if d["entrance_id"] == entrance_id)
        step(f"{broker}/{database}: MQTT floor")
        floor = asyncio.run(mqtt_floor(running.mqtt_url))
        step(f"{broker}/{database}: opens, idle")
        idle = asyncio.run(_open_many(running, entrance_id, reader, requests))
        record().update(
            {
                f"open_p50_ms{suffix}": round(percentile(idle, 0.5), 2),
                f"open_p99_ms{suffix}": round(percentile(idle, 0.99), 2),
                f"floor_p50_ms{suffix}": round(percentile(floor, 0.5), 3),
                f"floor_p99_ms{suffix}": round(percentile(floor, 0.99), 3),
            }
        )

        step(f"{broker}/{database}: opens under {events_per_second:.0f} events/s")
        doorbells = running.provision("doorbell", 20)
        time.sleep(1.0)  # Mosquitto reloads its password file
        report: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        duration = max(10.0, requests * 0.05 + 8)
        load = multiprocessing.Process(
            target=_load, args=(doorbells, events_per_second, duration, report)
        )
        load.start()
        report.get(timeout=60)
        time.sleep(2.0)  # reach a steady state
        loaded = asyncio.run(_open_many(running, entrance_id, reader, requests))
        load_result = report.get(timeout=duration + 60)
        load.join(timeout=30)
        stored = running.metric("sesame_mqtt_messages_total", channel="events")
    figures.update(
        {
            f"open_p50_ms{suffix}": round(percentile(idle, 0.5), 2),
            f"open_p99_ms{suffix}": round(percentile(idle, 0.99), 2),
            f"loaded_p50_ms{suffix}": round(percentile(loaded, 0.5), 2),
            f"loaded_p99_ms{suffix}": round(percentile(loaded, 0.99), 2),
            f"floor_p50_ms{suffix}": round(percentile(floor, 0.5), 3),
            f"floor_p99_ms{suffix}": round(percentile(floor, 0.99), 3),
            f"background_events_per_s{suffix}": round(load_result["sent"] / load_result["seconds"]),
            f"background_events_acked{suffix}": load_result["acked"],
            f"background_events_received{suffix}": stored,
        }
    )
    figures[f"open_p50_to_floor{suffix}"] = round(
        figures[f"open_p50_ms{suffix}"] / figures[f"floor_p50_ms{suffix}"], 1
    )
    print(
        f"{broker}/{database}: open p50 {figures[f'open_p50_ms{suffix}']} ms, p99 "
        f"{figures[f'open_p99_ms{suffix}']} ms; under {events_per_second:.0f} events/s p99 "
        f"{figures[f'loaded_p99_ms{suffix}']} ms; floor p50 "
        f"{figures[f'floor_p50_ms{suffix}']} ms",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--events-per-second", type=float, default=1000)
    parser.add_argument("--brokers", default="embedded,mosquitto")
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    figures = record()
    for database in args.databases.split(","):
        for broker in args.brokers.split(","):
            figures.update(measure(broker, database, args.requests, args.events_per_second))
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    run(main)
