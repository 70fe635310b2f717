"""Shared fixtures: each backend (SQLite and the real PostgreSQL) gets one migrated
database and one running app for the whole session; every test makes its own partner, so
tests never see each other's data and need no cleanup.

PostgreSQL tests skip when no server answers, except with ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from sesame.app import create_app
from sesame.auth.sms import MemorySmsSender
from sesame.kit.logging import configure_logging
from sesame.migrations import upgrade
from sesame.runtime import Runtime, build_runtime
from sesame.settings import Settings
from tests.support import Api, ShiftableClock, World, make_world, platform_admin_token

# Device fixtures (a gateway on a real broker, simulated devices), for every package.
pytest_plugins = ["tests.device_fixtures"]

CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_ADMIN_URL = os.environ.get(
    "SESAME_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", "postgresql"]

configure_logging("warning", "console")


async def _postgres_reachable() -> bool:
    try:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


def _require_postgres(reachable: bool) -> None:
    if reachable:
        return
    message = f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}"
    if CI:
        pytest.fail(message + " (CI=true: PostgreSQL tests must run, not skip)")
    pytest.skip(message)


async def create_postgres_database(prefix: str = "sesame_test") -> str:
    """A fresh, empty database; returns its SQLAlchemy URL."""
    _require_postgres(await _postgres_reachable())
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"


async def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture
async def postgres_database() -> AsyncIterator[str]:
    """A PostgreSQL database of its own at the latest schema, for tests that run other
    processes against it; dropped afterwards."""
    url = await create_postgres_database()
    await asyncio.to_thread(upgrade, url)
    yield url
    await drop_postgres_database(url)


async def fresh_database(backend: str, directory: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{directory / f'sesame-{uuid.uuid4().hex[:8]}.db'}"
    return await create_postgres_database()


@pytest.fixture(params=BACKENDS)
async def own_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated database of the test's own, per backend: for tests that run several
    runtimes (processes) on one database, or that must start from an empty one."""
    url = await fresh_database(request.param, tmp_path)
    await asyncio.to_thread(upgrade, url)
    yield url
    if request.param == "postgresql":
        await drop_postgres_database(url)


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """One database per backend for the session, built by running the migrations."""
    url = await fresh_database(request.param, tmp_path_factory.mktemp(request.param))
    await asyncio.to_thread(upgrade, url)
    yield url
    if request.param == "postgresql":
        await drop_postgres_database(url)


def test_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "development",
        "database_url": database_url,
        "secret_key": "test-secret-key-with-at-least-32-characters!",
        "log_level": "warning",
        "database_pool_size": 5,
        # argon2id at its cheapest: the tests create and sign in hundreds of accounts.
        "password_time_cost": 1,
        "password_memory_kib": 64,
        "gateway_enabled": False,
        "ledger_checkpoint_interval_seconds": 0.2,  # receipts sooner in tests
        # One router and sender at a time: notification tests start their own.
        "notify_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


test_settings.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
async def runtime(database_url: str) -> AsyncIterator[Runtime]:
    runtime = build_runtime(
        test_settings(database_url), clock=ShiftableClock(), sms_sender=MemorySmsSender()
    )
    yield runtime
    await runtime.close()


@pytest.fixture(scope="session")
async def app(runtime: Runtime) -> AsyncIterator[object]:
    application = create_app(runtime=runtime)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(autouse=True)
def _reset_clock(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests that move a clock start from real time, and leave it there: the shared
    runtimes serve later tests (and their tokens and leases follow that clock)."""
    clocks = []
    for name in ("runtime", "fleet"):
        if name in request.fixturenames:
            value = request.getfixturevalue(name)
            runtime: Runtime = value if name == "runtime" else value.runtime
            assert isinstance(runtime.clock, ShiftableClock)
            runtime.clock.reset()
            runtime.credential_cache.clear()
            clocks.append(runtime.clock)
    yield
    for clock in clocks:
        clock.reset()


_addresses = itertools.count(1)


def next_address() -> str:
    """A client address of its own per client, so per-address rate limits never collide."""
    n = next(_addresses)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


@pytest.fixture
async def api(app: object) -> AsyncIterator[Api]:
    transport = httpx.ASGITransport(app=app, client=(next_address(), 40000))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://sesame.test") as client:
        yield Api(client)


@pytest.fixture
def sms(runtime: Runtime) -> MemorySmsSender:
    assert isinstance(runtime.sms_sender, MemorySmsSender)
    return runtime.sms_sender


@pytest.fixture(scope="session")
async def admin_token(app: object, runtime: Runtime) -> str:
    return await platform_admin_token(app, runtime)


@pytest.fixture
async def world(api: Api, admin_token: str, runtime: Runtime) -> World:
    """A partner with two sites, their places, people and a credential for every role."""
    return await make_world(api, admin_token, runtime)


@pytest.fixture
async def other_world(api: Api, admin_token: str, runtime: Runtime) -> World:
    """A second, unrelated partner: its objects must stay invisible to ``world``."""
    return await make_world(api, admin_token, runtime)
