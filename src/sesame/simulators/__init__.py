"""Simulated devices of every kind, speaking the documented protocol (``sesame sim``).

A fleet is described by a JSON file, a list of ``{"device_id", "kind", "password",
"url"}`` — what provisioning returns — so simulators run against any broker.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sesame.models import DeviceKind
from sesame.simulators.device import Faults, SimulatedDevice
from sesame.simulators.kinds import SIMULATORS

__all__ = ["Faults", "SimulatedDevice", "load_fleet", "provision_fleet", "simulator", "start_fleet"]


def simulator(
    kind: DeviceKind | str, device_id: str, password: str, url: str, **options: Any
) -> SimulatedDevice:
    return SIMULATORS[DeviceKind(kind)](device_id, password, url, **options)


def load_fleet(path: Path, **options: Any) -> list[SimulatedDevice]:
    entries = json.loads(path.read_text())
    return [
        simulator(e["kind"], e["device_id"], e["password"], e["url"], **options) for e in entries
    ]


async def provision_fleet(
    api: str, api_key: str, site_id: str, kinds: list[str], count: int
) -> list[dict[str, str]]:
    """Provision ``count`` devices of each kind through the HTTP API, as an installer would."""
    import httpx

    async with httpx.AsyncClient(
        base_url=api, timeout=30, headers={"Authorization": f"Bearer {api_key}"}
    ) as client:
        provisioned = []
        for kind in kinds:
            for n in range(count):
                response = await client.post(
                    "/v1/devices",
                    json={
                        "site_id": site_id,
                        "kind": kind,
                        "name": f"simulated {kind} {n + 1}",
                        "model": "simulator",
                    },
                )
                response.raise_for_status()
                body = response.json()
                mqtt = body["credentials"]["mqtt"]
                provisioned.append(
                    {
                        "device_id": body["id"],
                        "kind": kind,
                        "name": body["name"],
                        "password": mqtt["password"],
                        "url": mqtt["url"],
                    }
                )
        return provisioned


async def start_fleet(devices: list[SimulatedDevice], *, concurrency: int = 50) -> None:
    """Connect devices, a bounded number at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def start(device: SimulatedDevice) -> None:
        async with gate:
            await device.start()

    await asyncio.gather(*(start(device) for device in devices))
