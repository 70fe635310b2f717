"""Passwords are hashed and checked with no write transaction open: on SQLite the one
writer holds the lock for everybody, and argon2id takes most of a second."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
import pytest

from sesame.auth.sms import MemorySmsSender
from sesame.kit.security import PasswordHashing
from sesame.migrations import upgrade
from sesame.runtime import Runtime, build_runtime
from tests.conftest import fresh_database, next_address, test_settings
from tests.support import PASSWORD, Api, ShiftableClock, World, served_world, unique


class LockProbingHasher(PasswordHashing):
    """Before every hash or check, tries to take SQLite's write lock from another
    connection. Other writers hold it for milliseconds and are waited for; a transaction
    of the very request that is hashing would hold it until the probe gives up."""

    def __init__(self, database: Path, **cost: int) -> None:
        super().__init__(**cost)
        self.database = database
        self.probes = 0
        self.held_during: list[str] = []

    def _lock_is_free(self) -> bool:
        connection = sqlite3.connect(self.database, timeout=2.0, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            connection.close()

    async def _probe(self, what: str) -> None:
        self.probes += 1
        if not await anyio.to_thread.run_sync(self._lock_is_free):
            self.held_during.append(what)

    async def hash(self, password: str) -> str:
        await self._probe("hash")
        return await super().hash(password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        await self._probe("verify")
        return await super().verify(password_hash, password)


async def _sqlite_runtime(directory: Path, **overrides: object) -> Runtime:
    url = await fresh_database("sqlite", directory)
    await asyncio.to_thread(upgrade, url)
    return build_runtime(
        test_settings(url, **overrides), clock=ShiftableClock(), sms_sender=MemorySmsSender()
    )


@pytest.fixture
async def probed(tmp_path: Path) -> AsyncIterator[tuple[Api, World, LockProbingHasher]]:
    runtime = await _sqlite_runtime(tmp_path)
    database = Path(runtime.settings.database_url.split(":///", 1)[1])
    hasher = LockProbingHasher(database, time_cost=1, memory_kib=64)
    runtime.passwords = hasher
    try:
        async with served_world(runtime, next_address()) as (api, world):
            yield api, world, hasher
    finally:
        await runtime.close()


async def test_no_sign_in_or_password_change_hashes_inside_a_write_transaction(
    probed: tuple[Api, World, LockProbingHasher],
) -> None:
    """Failed and successful sign-ins, a new account and a password change (also with an
    Idempotency-Key) all hash while nobody holds the write lock."""
    api, world, hasher = probed
    hasher.held_during.clear()
    before = hasher.probes
    email = world.staff["installer"]["email"]
    admin = world.tokens["partner_admin"]

    for password in ("wrong", "also wrong"):
        response = await api.post("/v1/auth/login", json={"email": email, "password": password})
        assert response.status_code == 401
    unknown = await api.post(
        "/v1/auth/login", json={"email": "nobody@nowhere.test", "password": "wrong"}
    )
    assert unknown.status_code == 401
    await api.login(email, PASSWORD)
    created = await api.post(
        "/v1/staff",
        token=admin,
        headers={"Idempotency-Key": unique("staff")},
        json={
            "email": f"{unique('new')}@partner.test",
            "name": "New",
            "role": "installer",
            "password": PASSWORD,
            "site_ids": [world.site_id],
        },
    )
    assert created.status_code == 201, created.text
    changed = await api.patch(
        f"/v1/staff/{created.json()['id']}", token=admin, json={"password": "a new password!"}
    )
    assert changed.status_code == 200, changed.text

    assert hasher.probes - before == 6  # 4 checks, 2 hashes
    assert hasher.held_during == []


async def test_a_flood_of_failed_sign_ins_at_real_cost_fails_no_other_write(
    tmp_path: Path,
) -> None:
    """Eight parallel wrong passwords at the default argon2id cost, while a manager creates
    buildings: every building is created (none waits out the database timeout behind
    the hashes), every sign-in is refused as wrong."""
    runtime = await _sqlite_runtime(
        tmp_path,
        # A connection for every request at once: what is measured is the write lock.
        database_pool_size=20,
        database_timeout_seconds=3.0,
        password_time_cost=3,
        password_memory_kib=65_536,
    )
    try:
        async with served_world(runtime, next_address()) as (api, world):
            email = world.staff["installer"]["email"]
            token = world.tokens["partner_admin"]

            async def bad_login(n: int) -> int:
                response = await api.post(
                    "/v1/auth/login", json={"email": email, "password": f"wrong {n}"}
                )
                return response.status_code

            async def create_buildings() -> list[int]:
                # One after another: they wait for nobody but the sign-ins.
                statuses = []
                for n in range(8):
                    response = await api.post(
                        "/v1/buildings",
                        token=token,
                        json={"site_id": world.site_id, "name": f"B{n}", "floor_count": 3},
                    )
                    statuses.append(response.status_code)
                return statuses

            *logins, buildings = await asyncio.gather(
                *(bad_login(n) for n in range(8)), create_buildings()
            )
    finally:
        await runtime.close()
    assert logins == [401] * 8
    assert buildings == [201] * 8
