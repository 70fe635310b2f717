"""Device tests run a real gateway against a real broker: the embedded one, and a
Mosquitto started for the session with the configuration ``sesame broker config`` writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sesame.app import create_app
from sesame.auth.sms import MemorySmsSender
from sesame.devices.broker import MosquittoConfig, hash_password
from sesame.devices.protocol import GATEWAY_USERNAME
from sesame.runtime import Runtime, build_runtime
from sesame.simulators import SimulatedDevice, simulator
from tests.conftest import CI, next_address, test_settings
from tests.support import Api, ShiftableClock, World, free_port, make_world, platform_admin_token

HEARTBEAT_TIMEOUT = 3.0


class Mosquitto:
    """A Mosquitto of the test's own, configured by Sesame's generator."""

    def __init__(self, directory: Path, gateway_password: str) -> None:
        if shutil.which("mosquitto") is None:
            message = "mosquitto is not installed (Debian package mosquitto)"
            if CI:
                pytest.fail(message + " (CI=true: broker tests must run, not skip)")
            pytest.skip(message)
        self.directory = directory
        self.port = free_port()  # the devices' listener
        self.gateway_port = free_port()
        self.gateway_password = gateway_password
        self.pid_file = directory / "mosquitto.pid"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart) the broker; Sesame keeps the password file current."""
        if not (self.directory / "mosquitto.conf").exists():
            MosquittoConfig(
                listener=f"127.0.0.1:{self.port}",
                gateway_listener=f"127.0.0.1:{self.gateway_port}",
                passwords={GATEWAY_USERNAME: hash_password(self.gateway_password)},
                user=getpass.getuser(),
            ).write(self.directory)
        log = open(self.directory / "mosquitto.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.directory / "mosquitto.conf")], stdout=log, stderr=log
        )
        self.pid_file.write_text(str(self.process.pid))
        deadline = time.monotonic() + 10
        waiting = [self.port, self.gateway_port]
        while waiting and time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.2),
            ):
                waiting.pop(0)
                continue
            time.sleep(0.05)
        if not waiting:
            return
        raise RuntimeError(
            "mosquitto did not start: " + (self.directory / "mosquitto.log").read_text()[-2000:]
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="session")
def broker_kind(database_url: str) -> str:
    """Each broker with one database: the embedded broker with SQLite (the default
    installation), Mosquitto with PostgreSQL (production). Every device test runs on both
    brokers and both databases without running the whole cross product."""
    return "embedded" if database_url.startswith("sqlite") else "mosquitto"


@pytest.fixture(scope="session")
async def device_runtime(
    database_url: str, broker_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Runtime]:
    overrides: dict[str, Any] = {
        "gateway_enabled": True,
        "device_heartbeat_timeout_seconds": HEARTBEAT_TIMEOUT,
    }
    mosquitto = None
    if broker_kind == "embedded":
        overrides["mqtt_bind"] = f"127.0.0.1:{free_port()}"
    else:
        directory = tmp_path_factory.mktemp("mosquitto")
        probe = build_runtime(test_settings(database_url))
        mosquitto = Mosquitto(directory, probe.keys.mqtt_gateway_password)
        await probe.close()
        mosquitto.start()
        overrides.update(
            mqtt_url=f"mqtt://127.0.0.1:{mosquitto.gateway_port}",
            mqtt_device_url=f"mqtt://127.0.0.1:{mosquitto.port}",
            mosquitto_config_dir=str(directory),
            mosquitto_pid_file=str(mosquitto.pid_file),
        )
    runtime = build_runtime(
        test_settings(database_url, **overrides),
        clock=ShiftableClock(),
        sms_sender=MemorySmsSender(),
    )
    runtime.test_mosquitto = mosquitto  # type: ignore[attr-defined]
    yield runtime
    await runtime.close()
    if mosquitto is not None:
        mosquitto.stop()


@pytest.fixture(scope="session")
async def device_app(device_runtime: Runtime) -> AsyncIterator[Any]:
    application = create_app(runtime=device_runtime)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def dapi(device_app: Any) -> AsyncIterator[Api]:
    transport = httpx.ASGITransport(app=device_app, client=(next_address(), 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://sesame.test") as client:
        yield Api(client)


@pytest.fixture(scope="session")
async def device_admin_token(device_app: Any, device_runtime: Runtime) -> str:
    return await platform_admin_token(device_app, device_runtime)


@pytest.fixture
async def dworld(dapi: Api, device_admin_token: str, device_runtime: Runtime) -> World:
    return await make_world(dapi, device_admin_token, device_runtime)


class Fleet:
    """Provisions devices through the API and runs simulators for them; stops them after."""

    def __init__(self, api: Api, world: World, runtime: Runtime) -> None:
        self.api = api
        self.world = world
        self.runtime = runtime
        self.devices: list[SimulatedDevice] = []

    async def provision(
        self, kind: str, *, entrance: str | None = "entrance", site: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "site_id": site or self.world.site_id,
            "kind": kind,
            "name": f"{kind} under test",
            **extra,
        }
        if entrance and kind in ("entrance_reader", "door_lock", "doorbell"):
            body["entrance_id"] = self.world.ids[entrance]
        created = await self.api.create("/v1/devices", self.world.tokens["partner_admin"], body)
        return created

    def simulator(self, device: dict[str, Any], **options: Any) -> SimulatedDevice:
        credentials = device["credentials"]["mqtt"]
        options.setdefault("heartbeat_interval", 1.0)
        options.setdefault("event_ack_timeout", 2.0)
        sim = simulator(
            device["kind"],
            credentials["username"],
            credentials["password"],
            credentials["url"],
            **options,
        )
        self.devices.append(sim)
        return sim

    async def start(self, sim: SimulatedDevice, *, online: bool = True) -> SimulatedDevice:
        """Connect (retrying for up to 15 s while a reloading broker learns the
        credentials: Mosquitto rereads its password file on SIGHUP, which takes longer on
        a loaded machine) and, by default, wait until the platform sees the device online."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:
            try:
                await sim.start(within=5)
                break
            except Exception:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)
        if online:
            await self.wait_for(lambda d: d["online"], sim.device_id)
        return sim

    async def run(self, kind: str, **options: Any) -> tuple[dict[str, Any], SimulatedDevice]:
        device = await self.provision(kind)
        return device, await self.start(self.simulator(device, **options))

    async def read(self, device_id: str) -> dict[str, Any]:
        response = await self.api.get(
            f"/v1/devices/{device_id}", token=self.world.tokens["partner_admin"]
        )
        data: dict[str, Any] = response.json()
        return data

    async def wait_for(self, condition: Any, device_id: str, seconds: float = 10) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            device = await self.read(device_id)
            if condition(device):
                return device
            if loop.time() > deadline:
                raise AssertionError(f"condition not met: {device}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for sim in self.devices:
            with contextlib.suppress(Exception):
                await sim.stop()


@pytest.fixture
async def fleet(dapi: Api, dworld: World, device_runtime: Runtime) -> AsyncIterator[Fleet]:
    fleet = Fleet(dapi, dworld, device_runtime)
    yield fleet
    await fleet.close()


@pytest.fixture
async def other_dworld(dapi: Api, device_admin_token: str, device_runtime: Runtime) -> World:
    return await make_world(dapi, device_admin_token, device_runtime)
