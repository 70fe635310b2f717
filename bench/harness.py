"""What every benchmark needs: a scratch installation, a real server, a real broker, figures.

A ``Stack`` is a Sesame installation in a temporary directory: its database (SQLite, or a
fresh PostgreSQL database), the demo seeded, optionally a Mosquitto configured by
``sesame broker config``, and ``sesame serve`` as a subprocess, exactly as an operator
runs them.

Benchmarks behave like tools:

- nothing they start outlives them. Servers, brokers and helper processes run in process
  groups of their own (``spawn``) and are stopped as a group — SIGTERM, then SIGKILL after
  ``STOP_SECONDS`` — when their block ends, on any exception, on SIGINT or SIGTERM to the
  bench, and at interpreter exit; on Linux they also get SIGTERM if the bench is killed
  outright. Scratch directories and PostgreSQL databases are removed the same way;
- the server's output goes to ``server.log`` in the stack's directory, and its tail is
  printed (on stderr) when it does not start, when it dies, or when a step fails;
- ``run(main)`` runs a bench: the figures it records as it goes (``record()``) and the
  step it is at (``step()``) are printed as the last line, one JSON object with an
  ``error`` field, when a step fails, and the bench exits non-zero. A successful run
  prints its own last line, as before.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import multiprocessing
import multiprocessing.util  # its exit handler first, so that ours runs before it
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = os.environ.get(
    "SESAME_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# How long a stopped process group may take before it is killed: the server's shutdown
# grace (SESAME_SHUTDOWN_GRACE_SECONDS, 5) for its requests, as long again to close.
STOP_SECONDS = 15.0
LOG_TAIL_LINES = 40


# -- figures, and what a failed step prints ---------------------------------------------------


class Figures(dict[str, Any]):
    """What a bench has measured so far, and the step it is at."""

    current_step = "setting up"


_FIGURES = Figures()


def record() -> Figures:
    """The bench's figures: fill it as measurements come in, so that a failure later on
    still prints them."""
    return _FIGURES


def step(name: str) -> None:
    """Name what the bench does next; a failure is reported as this step's."""
    _FIGURES.current_step = name


class Interrupted(BaseException):
    """The bench got SIGTERM or SIGHUP: unwind, as for Ctrl-C, so that everything stops."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_BENCH_PID = os.getpid()


def _interrupted(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _BENCH_PID:  # a forked helper (multiprocessing): just die
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Interrupted(signum)


def run(main: Callable[[], object]) -> None:
    """Run a bench's ``main``. If a step fails (an exception, Ctrl-C, SIGTERM), print the
    traceback on stderr and, as the last line on stdout, the figures so far with an
    ``error`` naming the step; then exit non-zero (1, or 128 + the signal)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _interrupted)
    try:
        main()
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            raise
        if isinstance(exc, SystemExit):
            message, status = str(exc.code), exc.code if isinstance(exc.code, int) else 1
        elif isinstance(exc, Interrupted):
            message, status = f"interrupted by {exc}", 128 + exc.signum
        elif isinstance(exc, KeyboardInterrupt):
            message, status = "interrupted by SIGINT", 128 + signal.SIGINT
        else:
            traceback.print_exc()  # the whole story (a server's log, say) is on stderr
            first_line = next(iter(str(exc).splitlines()), "")
            message, status = f"{type(exc).__name__}: {first_line}".strip(" :"), 1
        sys.stderr.flush()
        failed = {**_FIGURES, "error": f"{_FIGURES.current_step}: {message}"}
        print(json.dumps(failed, sort_keys=True, default=str), flush=True)
        sys.exit(status)


# -- processes that cannot outlive the bench --------------------------------------------------

_children: list[subprocess.Popen[Any]] = []
_stacks: list[Stack] = []
_databases: set[str] = set()


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec: nothing to import
    """Linux: SIGTERM this child when the bench dies, even by SIGKILL."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def spawn(
    command: Sequence[str], *, log: Path | None = None, **options: Any
) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` in a process group of its own (which its own children join),
    stopped with ``stop_process`` or, at the latest, when the bench exits. With ``log``
    its stdout and stderr go to that file."""
    if log is not None:
        with log.open("ab") as output:
            process = _start(command, stdout=output, stderr=subprocess.STDOUT, **options)
    else:
        process = _start(command, **options)
    _children[:] = [child for child in _children if child.returncode is None]
    _children.append(process)
    return process


def _start(command: Sequence[str], **options: Any) -> subprocess.Popen[Any]:
    if _LIBC is not None:
        options.setdefault("preexec_fn", _die_with_parent)
    return subprocess.Popen(list(command), start_new_session=True, **options)


def stop_process(process: subprocess.Popen[Any] | None, *, seconds: float = STOP_SECONDS) -> None:
    """SIGTERM to the process's group, SIGKILL to what is left of it after ``seconds``."""
    if process is None:
        return
    group = process.pid  # start_new_session: the child leads its group
    if process.poll() is None:
        _signal_group(group, signal.SIGTERM)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            print(
                f"bench: {process.args!r} ignored SIGTERM for {seconds:.0f} s; killing it",
                file=sys.stderr,
                flush=True,
            )
            _signal_group(group, signal.SIGKILL)
            process.wait()
    # Members that outlived their leader (a server's workers, its broker).
    deadline = time.monotonic() + min(seconds, 5.0)
    if _signal_group(group, signal.SIGTERM):
        while time.monotonic() < deadline and _signal_group(group, 0):
            time.sleep(0.05)
        _signal_group(group, signal.SIGKILL)
    with contextlib.suppress(ValueError):
        _children.remove(process)


def _signal_group(group: int, signum: int) -> bool:
    """Whether the group still had a member to signal."""
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@atexit.register
def _leave_nothing_behind() -> None:
    """At interpreter exit (registered after multiprocessing's, so it runs before it
    waits for its children): stop every stack, process and database still there."""
    for running in list(_stacks):
        with contextlib.suppress(Exception):
            running.stop()
    for process in list(_children):
        if process.returncode is None:  # not yet seen ending: its group may hold others
            with contextlib.suppress(Exception):
                stop_process(process)
    for child in multiprocessing.active_children():
        child.terminate()
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
            child.join()
    for url in list(_databases):
        with contextlib.suppress(Exception):
            asyncio.run(_drop_pg_database(url))


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The end of a log file, for a message; empty if there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _with_children(pid: int) -> list[int]:
    """A process and its direct children (uvicorn workers)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    return pids


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn workers), in MiB."""
    total = 0
    for each in _with_children(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its children (uvicorn
    workers): a figure the machine's other load does not change, unlike a rate."""
    total = 0
    for each in _with_children(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def _create_pg_database() -> str:
    name = f"sesame_bench_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    url = base.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    _databases.add(url)  # dropped at exit if nothing else does
    return url


async def _drop_pg_database(url: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    await connection.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    await connection.close()
    _databases.discard(url)


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
        self._stopped = False
        self._log_printed = False
        _stacks.append(self)

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
        # Debian installs it in /usr/sbin, which is not on every user's PATH.
        mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
        if mosquitto is None:
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
        log = self.directory / "mosquitto.log"
        self._mosquitto = spawn([mosquitto, "-c", str(conf)], log=log)
        (self.directory / "mosquitto.pid").write_text(str(self._mosquitto.pid))
        try:
            _wait_for_port(self.mqtt_port)
            _wait_for_port(self.device_port)
        except RuntimeError as exc:
            raise RuntimeError(f"mosquitto did not start ({exc}):\n{log_tail(log)}") from None

    @property
    def server_log(self) -> Path:
        return self.directory / "server.log"

    def start_server(self, *args: str) -> None:
        self._server = spawn(
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
            log=self.server_log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise RuntimeError(
                    f"server exited with status {self._server.returncode} while starting:\n"
                    + log_tail(self.server_log)
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("server did not start within 60 s:\n" + log_tail(self.server_log))

    @property
    def server_pid(self) -> int:
        assert self._server is not None
        return self._server.pid

    def stop_server(self) -> None:
        """Stop the server (its whole process group); say so if it had died on its own."""
        if self._server is None:
            return
        if self._server.poll() is not None:
            self.print_server_log(f"the server exited with status {self._server.returncode}")
        stop_process(self._server)
        self._server = None

    def print_server_log(self, why: str) -> None:
        """The end of the server's output on stderr, once."""
        tail = log_tail(self.server_log)
        if tail and not self._log_printed:
            self._log_printed = True
            print(f"bench: {why}; the end of server.log:\n{tail}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        """Everything the stack holds: server, broker, database, directory. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self.stop_server()
            stop_process(self._mosquitto)
            self._mosquitto = None
            if self.database == "postgresql" and self.database_url:
                asyncio.run(_drop_pg_database(self.database_url))
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            with contextlib.suppress(ValueError):
                _stacks.remove(self)

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
    except BaseException:
        if running._server is not None and running._server.poll() is not None:
            running.print_server_log(f"the server exited with status {running._server.returncode}")
        else:
            running.print_server_log("a step failed")
        raise
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
