"""HTTP API throughput and latency, on SQLite and PostgreSQL, with 1 and 2 server workers.

What it measures, for each backend and worker count, against a real ``sesame serve``:

- GET by id (``/v1/sites/{id}``) and a list (``/v1/units?site_id=...``, 50 per page),
  both authenticated with a partner API key, at saturation (wrk, 64 connections):
  requests per second and p50/p99 latency;
- the same GET by id at half the saturated rate: p50 and p99 latency, the figure that
  matters for users. Arrivals are open-loop (``bench/paced.lua``: wrk starting requests
  at exponentially spaced times), as users arrive; ``hey -q`` was used before, but its
  workers tick in phase, so it sent bursts of 32 requests at once and measured how
  long a burst takes to drain, not the latency at half load;
- ``/healthz`` (same framework and middleware, no database): the ceiling;
- the server's CPU time per request (all its processes) for the GET by id and for
  ``/healthz``: on a machine shared with other work it moves far less than the rates.

The load generator is wrk (Debian package ``wrk``), a C program that uses a few percent of
a core, so the server is what saturates. The last line printed is one
JSON object with every figure; ``*_p99_ms_*`` keys without ``saturated`` are at half load.

Usage: ``python bench/api_throughput.py [--seconds 8] [--skip-postgres]``
PostgreSQL comes from ``SESAME_BENCH_POSTGRES_URL`` (default: local server, user postgres).
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import log_tail, record, run, spawn, step, stop_process

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = os.environ.get(
    "SESAME_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CONNECTIONS = 64
THREADS = 2
PACED_SCRIPT = ROOT / "bench" / "paced.lua"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sesame(env: dict[str, str], cwd: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sesame", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


async def create_pg_database() -> str:
    name = f"sesame_bench_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    return (
        POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        + f"/{name}"
    )


async def drop_pg_database(url: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    await connection.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    await connection.close()


class Server:
    def __init__(self, env: dict[str, str], cwd: Path, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = cwd / f"server-{self.port}.log"
        self.process = spawn(
            [
                sys.executable,
                "-m",
                "sesame",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=env,
            cwd=cwd,
            log=log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        stop_process(self.process)
        raise RuntimeError(f"server did not start:\n{log_tail(log)}")

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server and every process under it (its workers)."""
        total, pending = 0, [self.process.pid]
        while pending:
            pid = pending.pop()
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
                pending += [
                    int(child)
                    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                ]
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        stop_process(self.process)


def wrk(url: str, seconds: int, api_key: str | None, rate: float | None = None) -> dict[str, float]:
    """At saturation (every connection sends as soon as it has its answer), or with
    requests started at ``rate`` per second whatever the latency (``bench/paced.lua``)."""
    command = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    if api_key:
        command += ["-H", f"Authorization: Bearer {api_key}"]
    if rate is not None:
        command += ["-s", str(PACED_SCRIPT), url, "--", f"{rate / THREADS:.2f}"]
    else:
        command.append(url)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses\n{out}")
    return {
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
    }


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def measure(
    label: str, env: dict[str, str], cwd: Path, seconds: int, figures: dict[str, float]
) -> None:
    printed = sesame(env, cwd, "demo")
    api_key = re.search(r"(ses_[0-9a-f]{12}_\S+)", printed).group(1)  # type: ignore[union-attr]
    for workers in (1, 2):
        step(f"{label}, {workers} worker{'s' if workers > 1 else ''}")
        server = Server(env, cwd, workers)
        try:
            sites = httpx.get(
                f"{server.url}/v1/sites", headers={"Authorization": f"Bearer {api_key}"}
            ).json()
            site_id = sites["items"][0]["id"]
            by_id = f"{server.url}/v1/sites/{site_id}"
            listing = f"{server.url}/v1/units?site_id={site_id}&limit=50"
            wrk(by_id, 2, api_key)  # warm-up: connections, caches, prepared statements
            suffix = f"{label}_{workers}w"
            before = server.cpu_seconds()
            get = wrk(by_id, seconds, api_key)
            get_cpu_us = (server.cpu_seconds() - before) / get["requests"] * 1e6
            half = wrk(by_id, seconds, api_key, rate=get["rps"] / 2)
            lst = wrk(listing, seconds, api_key)
            before = server.cpu_seconds()
            bare = wrk(f"{server.url}/healthz", seconds, None)
            bare_cpu_us = (server.cpu_seconds() - before) / bare["requests"] * 1e6
            figures.update(
                {
                    f"get_by_id_rps_{suffix}": round(get["rps"]),
                    f"get_by_id_p50_ms_saturated_{suffix}": get["p50_ms"],
                    f"get_by_id_p99_ms_saturated_{suffix}": get["p99_ms"],
                    f"get_by_id_half_load_rps_{suffix}": round(half["rps"]),
                    f"get_by_id_p50_ms_{suffix}": round(half["p50_ms"], 2),
                    f"get_by_id_p99_ms_{suffix}": round(half["p99_ms"], 2),
                    f"list_rps_{suffix}": round(lst["rps"]),
                    f"list_p50_ms_saturated_{suffix}": lst["p50_ms"],
                    f"list_p99_ms_saturated_{suffix}": lst["p99_ms"],
                    f"bare_rps_{suffix}": round(bare["rps"]),
                    # Server CPU per request: steadier than rates on a shared machine.
                    f"get_by_id_server_cpu_us_{suffix}": round(get_cpu_us),
                    f"bare_server_cpu_us_{suffix}": round(bare_cpu_us),
                }
            )
            print(
                f"{suffix}: GET by id {get['rps']:.0f} req/s (p99 {get['p99_ms']} ms "
                f"saturated, {half['p99_ms']:.1f} ms at {half['rps']:.0f} req/s); "
                f"list {lst['rps']:.0f} req/s; bare {bare['rps']:.0f} req/s; server CPU per "
                f"request {get_cpu_us:.0f} us (GET by id), {bare_cpu_us:.0f} us (bare)",
                flush=True,
            )
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("needs wrk: apt-get install wrk")

    figures = record()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SESAME_")}
    base_env.update(
        {"SESAME_ENV": "development", "SESAME_LOG_LEVEL": "info", "PYTHONPATH": str(ROOT / "src")}
    )
    base_env["SESAME_MQTT_BIND"] = f"127.0.0.1:{free_port()}"  # not the default, maybe taken
    with tempfile.TemporaryDirectory(prefix="sesame-bench-") as tmp:
        cwd = Path(tmp)
        sqlite_env = {**base_env, "SESAME_DATABASE_URL": f"sqlite+aiosqlite:///{cwd}/bench.db"}
        sesame(sqlite_env, cwd, "db", "upgrade")
        measure("sqlite", sqlite_env, cwd, args.seconds, figures)
        if not args.skip_postgres:
            url = asyncio.run(create_pg_database())
            try:
                pg_env = {**base_env, "SESAME_DATABASE_URL": url}
                sesame(pg_env, cwd, "db", "upgrade")
                measure("pg", pg_env, cwd, args.seconds, figures)
            finally:
                asyncio.run(drop_pg_database(url))
    if "bare_rps_pg_2w" in figures:
        figures["bare_rps_2w"] = figures["bare_rps_pg_2w"]
        figures["get_by_id_share_of_bare_pg_2w"] = round(
            figures["get_by_id_rps_pg_2w"] / figures["bare_rps_pg_2w"], 3
        )
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    run(main)
