"""Simulated devices of every kind, speaking the documented protocol (``sesame sim``).

A fleet is described by a JSON file: a list of ``{"device_id", "kind", "password",
"url"}`` (what ``sesame demo`` writes) or of the answers of ``POST /v1/devices``, or one of
either, so simulators run against any broker.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sesame.models import DeviceKind
from sesame.simulators.device import Faults, SimulatedDevice
from sesame.simulators.kinds import SIMULATORS

__all__ = [
    "Faults",
    "FleetFileError",
    "SimulatedDevice",
    "load_fleet",
    "provision_fleet",
    "read_fleet",
    "simulator",
    "start_fleet",
]


def simulator(
    kind: DeviceKind | str, device_id: str, password: str, url: str, **options: Any
) -> SimulatedDevice:
    return SIMULATORS[DeviceKind(kind)](device_id, password, url, **options)


class FleetFileError(ValueError):
    """A devices file ``sesame sim`` cannot use; the message says why, in one line."""


FLEET_ENTRY = (
    'a list of {"device_id", "kind", "password", "url"} (what `sesame demo` writes) or of '
    "POST /v1/devices answers, or one of either"
)


def fleet_entry(entry: object) -> dict[str, str]:
    """One device of a devices file, as ``{"device_id", "kind", "name", "password", "url"}``:
    from what ``sesame demo`` and ``--provision`` write, or from an answer of
    ``POST /v1/devices`` (its credentials under ``credentials.mqtt``)."""
    if not isinstance(entry, dict):
        raise ValueError(f"expected an object, found {type(entry).__name__}")
    credentials = entry.get("credentials")
    if isinstance(credentials, dict):  # a POST /v1/devices answer
        mqtt = credentials.get("mqtt")
        if not isinstance(mqtt, dict):
            raise ValueError("credentials has no mqtt object")
        found = {
            "device_id": entry.get("id") or credentials.get("device_id"),
            "kind": entry.get("kind"),
            "name": entry.get("name"),
            "password": mqtt.get("password"),
            "url": mqtt.get("url"),
        }
    else:
        found = {key: entry.get(key) for key in ("device_id", "kind", "name", "password", "url")}
    missing = [
        key for key in ("device_id", "kind", "password", "url") if not isinstance(found[key], str)
    ]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    if found["kind"] not in {kind.value for kind in DeviceKind}:
        raise ValueError(
            f"unknown kind {found['kind']!r} (one of {', '.join(k.value for k in DeviceKind)})"
        )
    return {key: str(value) for key, value in found.items() if value is not None}


def read_fleet(path: Path) -> list[dict[str, str]]:
    """The devices listed in ``path``; :class:`FleetFileError` if it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FleetFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetFileError(f"{path}: cannot be read ({exc})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FleetFileError(f"{path}: not JSON ({exc}); expected {FLEET_ENTRY}") from None
    entries = document if isinstance(document, list) else [document]
    fleet = []
    for number, entry in enumerate(entries, start=1):
        try:
            fleet.append(fleet_entry(entry))
        except ValueError as exc:
            where = f"entry {number}" if isinstance(document, list) else "the device"
            raise FleetFileError(f"{path}: {where}: {exc}; expected {FLEET_ENTRY}") from None
    if not fleet:
        raise FleetFileError(f"{path}: lists no devices; expected {FLEET_ENTRY}")
    return fleet


def load_fleet(path: Path, **options: Any) -> list[SimulatedDevice]:
    return [
        simulator(e["kind"], e["device_id"], e["password"], e["url"], **options)
        for e in read_fleet(path)
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
