"""Sustained event ingestion: device → broker → gateway → database, acknowledged.

For SQLite and PostgreSQL, against a real ``sesame serve``: 50 provisioned doorbells
publish events (two load processes, raw MQTT, faster than the platform can store them)
through Mosquitto — so the broker is not what is measured — and the figure is how many
events per second end up stored (counted in the database) over a steady window. In the
same run, the ceiling: the raw batched-insert rate of the same database for the same rows
(SQLAlchemy Core, 500 rows per statement, no gateway, no MQTT, no acknowledgements).

Last line: one JSON object with ``sqlite_events_per_s``, ``postgres_events_per_s``, their
ceilings, and the server's CPU time per event stored over the same window
(``*_server_cpu_us_per_event``: on a shared machine, steadier than the rates).

Usage: ``python bench/event_ingest.py [--seconds 15] [--offered 9000]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_seconds, record, run, stack, step
from sesame.kit.db import create_engine
from sesame.kit.ids import new_id


def _publish(
    devices: list[dict[str, str]], per_second: float, seconds: float, done: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    """Child process: publish events as fast as ``per_second`` across ``devices``."""
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv311

    from sesame.devices import protocol
    from sesame.devices.gateway import broker_address

    async def run() -> None:
        clients = []
        acked = 0

        def on_ack(client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
            nonlocal acked
            acked += payload.count(b"-") // 4  # four dashes per UUID
            return 0

        for device in devices:
            client = gmqtt.Client(device["device_id"])
            client.set_auth_credentials(device["device_id"], device["password"])
            client.on_message = on_ack
            host, port = broker_address(device["url"])
            await client.connect(host, port, version=MQTTv311)
            client.subscribe(protocol.topic(device["device_id"], protocol.Channel.EVENTS_ACK), 1)
            clients.append((client, protocol.topic(device["device_id"], protocol.Channel.EVENTS)))
        done.put("ready")
        sent = 0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * per_second) - sent
            for n in range(max(0, due)):
                client, topic = clients[(sent + n) % len(clients)]
                payload = (
                    b'{"v":1,"event_id":"'
                    + str(uuid.uuid4()).encode()
                    + b'","type":"door_opened","occurred_at":"'
                    + datetime.now(UTC).isoformat().encode()
                    + b'","data":{}}'
                )
                client.publish(topic, payload, qos=1)
            sent += max(0, due)
            await asyncio.sleep(0.005)
        await asyncio.sleep(2)
        done.put({"sent": sent, "acked": acked})
        for client, _ in clients:
            await client.disconnect()

    asyncio.run(run())


async def _count(url: str) -> int:
    from sqlalchemy import func, select

    from sesame.models import DeviceEventRecord

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return int(
                (
                    await connection.execute(select(func.count()).select_from(DeviceEventRecord))
                ).scalar_one()
            )
    finally:
        await engine.dispose()


async def _ceiling(url: str, rows: int = 50_000, batch: int = 500) -> float:
    """The same database's raw batched-insert rate for the same rows."""
    from sqlalchemy import insert, select

    from sesame.models import Device, DeviceEventRecord

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            device = (await connection.execute(select(Device).limit(1))).first()
            await connection.commit()
            assert device is not None
            now = datetime.now(UTC)
            started = time.perf_counter()
            for _ in range(rows // batch):
                values = [
                    {
                        "id": new_id(),
                        "partner_id": device.partner_id,
                        "site_id": device.site_id,
                        "device_id": device.id,
                        "event_id": uuid.uuid4(),
                        "type": "door_opened",
                        "occurred_at": now,
                        "received_at": now,
                        "data": {},
                    }
                    for _ in range(batch)
                ]
                await connection.execute(insert(DeviceEventRecord), values)
                await connection.commit()
            return rows / (time.perf_counter() - started)
    finally:
        await engine.dispose()


def measure(database: str, seconds: float, offered: float) -> dict[str, float]:
    step(f"{database}: events through Mosquitto")
    with stack(broker="mosquitto", database=database) as running:
        running.start_server()
        doorbells = running.provision("doorbell", 50)
        time.sleep(1.0)  # Mosquitto reloads its password file
        done: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        halves = [doorbells[:25], doorbells[25:]]
        loads = [
            multiprocessing.Process(target=_publish, args=(half, offered / 2, seconds + 4, done))
            for half in halves
        ]
        for load in loads:
            load.start()
        for _ in loads:
            done.get(timeout=60)
        time.sleep(3.0)  # past the start-up transient
        first = asyncio.run(_count(running.database_url))
        cpu_started = cpu_seconds(running.server_pid)
        started = time.monotonic()
        time.sleep(seconds)
        stored = asyncio.run(_count(running.database_url)) - first
        rate = stored / (time.monotonic() - started)
        cpu = cpu_seconds(running.server_pid) - cpu_started
        reports = [done.get(timeout=120) for _ in loads]
        for load in loads:
            load.join(timeout=30)
        running.stop_server()  # the ceiling is measured on an idle database
        label = "sqlite" if database == "sqlite" else "postgres"
        record()[f"{label}_events_per_s"] = round(rate)
        step(f"{database}: batched-insert ceiling")
        ceiling = asyncio.run(_ceiling(running.database_url))
    label = "sqlite" if database == "sqlite" else "postgres"
    sent = sum(r["sent"] for r in reports)
    print(
        f"{label}: {rate:.0f} events/s stored (offered {offered:.0f}/s, {sent} sent, "
        f"{sum(r['acked'] for r in reports)} acknowledged); raw batched insert "
        f"{ceiling:.0f} rows/s; the server used {cpu:.1f} s of CPU "
        f"({1e6 * cpu / max(stored, 1):.0f} µs per event stored)",
        flush=True,
    )
    return {
        f"{label}_server_cpu_us_per_event": round(1e6 * cpu / max(stored, 1)),
        f"{label}_events_per_s": round(rate),
        f"{label}_insert_ceiling_per_s": round(ceiling),
        f"{label}_offered_per_s": round(offered),
        f"{label}_share_of_ceiling": round(rate / ceiling, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--offered", type=float, default=9000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    figures = record()
    for database in args.databases.split(","):
        figures.update(measure(database, args.seconds, args.offered))
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    run(main)
