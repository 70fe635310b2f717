"""What every benchmark needs: a scratch installation, a real server, a real broker, figures.

A ``Stack`` is a Sesame installation in a temporary directory: its database (SQLite, or a
fresh PostgreSQL database), the demo seeded, optionally a Mosquitto configured by
``sesame broker config``, and ``sesame serve`` as a subprocess, exactly as an operator
runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = os.environ.get(
    "SESAME_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn workers), in MiB."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    for each in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


async def _create_pg_database() -> str:
    name = f"sesame_bench_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    return base.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"


async def _drop_pg_database(url: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    await connection.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    await connection.close()


class Stack:
    def __init__(
        self,
        *,
        database: str = "sqlite",
        broker: str = "embedded",
        workers: int = 1,
        log_level: str = "warning",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.database = database
        self.broker = broker
        self.workers = workers
        self.directory = Path(tempfile.mkdtemp(prefix="sesame-bench-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SESAME_")}
        self.env.update(
            {
                "SESAME_ENV": "development",
                "SESAME_LOG_LEVEL": log_level,
                "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **(extra_env or {}),
            }
        )
        self.database_url = ""
        self.api_key = ""
        self.demo_output = ""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mqtt_port = free_port()  # where the gateway connects
        self.mqtt_url = f"mqtt://127.0.0.1:{self.mqtt_port}"
        self.device_port = free_port()  # Mosquitto's listener for devices
        self._server: subprocess.Popen[bytes] | None = None
        self._mosquitto: subprocess.Popen[bytes] | None = None

    # -- life cycle -------------------------------------------------------------------------

    def sesame(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "sesame", *args],
            env=self.env,
            cwd=self.directory,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"sesame {' '.join(args)}: {result.stderr[-2000:]}")
        return result.stdout

    def prepare(self) -> Stack:
        """Database, migrations, the demo and the broker; not yet the server."""
        if self.database == "postgresql":
            self.database_url = asyncio.run(_create_pg_database())
        else:
            self.database_url = f"sqlite+aiosqlite:///{self.directory / 'bench.db'}"
        self.env["SESAME_DATABASE_URL"] = self.database_url
        if self.broker == "mosquitto":
            self.env.update(
                {
                    "SESAME_MQTT_URL": self.mqtt_url,
                    "SESAME_MQTT_DEVICE_URL": f"mqtt://127.0.0.1:{self.device_port}",
                    "SESAME_MOSQUITTO_CONFIG_DIR": str(self.directory / "mosquitto"),
                    "SESAME_MOSQUITTO_PID_FILE": str(self.directory / "mosquitto.pid"),
                }
            )
        else:
            self.env["SESAME_MQTT_BIND"] = f"127.0.0.1:{self.mqtt_port}"
        self.sesame("db", "upgrade")
        self.demo_output = self.sesame("demo")
        self.api_key = re.search(r"(ses_[0-9a-f]{12}_\S+)", self.demo_output).group(1)  # type: ignore[union-attr]
        if self.broker == "mosquitto":
            self._start_mosquitto()
        return self

    def _start_mosquitto(self) -> None:
        if shutil.which("mosquitto") is None:
            raise SystemExit("needs mosquitto: apt-get install mosquitto")
        self.sesame(
            "broker",
            "config",
            "--output",
            str(self.directory / "mosquitto"),
            "--listen",
            f"127.0.0.1:{self.device_port}",
            "--gateway-listen",
            f"127.0.0.1:{self.mqtt_port}",
        )
        conf = self.directory / "mosquitto" / "mosquitto.conf"
        self._mosquitto = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        (self.directory / "mosquitto.pid").write_text(str(self._mosquitto.pid))
        _wait_for_port(self.mqtt_port)
        _wait_for_port(self.device_port)

    def start_server(self, *args: str) -> None:
        self._server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sesame",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                *args,
            ],
            env=self.env,
            cwd=self.directory,
            stdout=open(self.directory / "server.log", "wb"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(
            "server did not start: " + (self.directory / "server.log").read_text()[-3000:]
        )

    @property
    def server_pid(self) -> int:
        assert self._server is not None
        return self._server.pid

    def stop_server(self) -> None:
        if self._server is not None and self._server.poll() is None:
            self._server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._server.wait(timeout=20)

    def stop(self) -> None:
        for process in (self._server, self._mosquitto):
            if process is not None and process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=20)
        if self.database == "postgresql" and self.database_url:
            asyncio.run(_drop_pg_database(self.database_url))
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- using it ---------------------------------------------------------------------------

    def demo_devices(self) -> list[dict[str, str]]:
        devices: list[dict[str, str]] = json.loads(
            (self.directory / "var" / "demo-devices.json").read_text()
        )
        return devices

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def provision(self, kind: str, count: int, *, concurrency: int = 16) -> list[dict[str, str]]:
        """Provision devices through the API; their credentials, as simulators need them."""
        site_id = self.demo_devices_site()

        async def run() -> list[dict[str, str]]:
            gate = asyncio.Semaphore(concurrency)
            async with httpx.AsyncClient(
                base_url=self.url, headers=self.headers(), timeout=30
            ) as client:

                async def one(n: int) -> dict[str, str]:
                    async with gate:
                        response = await client.post(
                            "/v1/devices",
                            json={"site_id": site_id, "kind": kind, "name": f"{kind} {n}"},
                        )
                        response.raise_for_status()
                        body = response.json()
                        mqtt = body["credentials"]["mqtt"]
                        return {
                            "device_id": body["id"],
                            "kind": kind,
                            "password": mqtt["password"],
                            "url": mqtt["url"],
                        }

                return list(await asyncio.gather(*(one(n) for n in range(count))))

        return asyncio.run(run())

    def demo_devices_site(self) -> str:
        response = httpx.get(f"{self.url}/v1/sites", headers=self.headers())
        site_id: str = response.json()["items"][0]["id"]
        return site_id

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics").text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def stack(**options: Any) -> Iterator[Stack]:
    running = Stack(**options)
    try:
        yield running.prepare()
    finally:
        running.stop()


async def mqtt_floor(url: str, rounds: int = 300) -> list[float]:
    """Round trips (ms) between two plain clients through a broker: the transport's floor.

    Both clients use the gateway's credentials (the only user that may use any topic)."""
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv311

    from sesame.devices.gateway import broker_address
    from sesame.runtime import Keys

    host, port = broker_address(url)
    password = Keys.derive(os.environ.get("SESAME_SECRET_KEY", _dev_secret())).mqtt_gateway_password
    ping, pong = "sesame/v1/bench/ping", "sesame/v1/bench/pong"
    a = gmqtt.Client(f"sesame-gateway-floor-a-{uuid.uuid4().hex[:6]}")
    b = gmqtt.Client(f"sesame-gateway-floor-b-{uuid.uuid4().hex[:6]}")
    waiter: asyncio.Future[float] | None = None

    def echo(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        client.publish(pong, payload, qos=1)
        return 0

    def arrived(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        if waiter is not None and not waiter.done():
            waiter.set_result(time.perf_counter())
        return 0

    a.on_message, b.on_message = arrived, echo
    for client in (a, b):
        client.set_auth_credentials("sesame-gateway", password)
        await client.connect(host, port, version=MQTTv311)
    a.subscribe(pong, qos=1)
    b.subscribe(ping, qos=1)
    await asyncio.sleep(0.3)
    samples = []
    for _ in range(rounds):
        waiter = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        a.publish(ping, b"x", qos=1)
        samples.append((await asyncio.wait_for(waiter, 5) - started) * 1000)
    await a.disconnect()
    await b.disconnect()
    return samples


def _dev_secret() -> str:
    from sesame.settings import DEVELOPMENT_SECRET_KEY

    return DEVELOPMENT_SECRET_KEY
