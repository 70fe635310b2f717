"""A stranger failing someone's password is refused at their own address; the owner,
signing in from theirs, is never locked out by it."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from sesame.app import create_app
from sesame.demo import PLATFORM
from sesame.kit.db import write_intent
from sesame.runtime import build_runtime
from sesame.staff.schemas import StaffCreate
from sesame.staff.service import StaffService
from tests.conftest import test_settings
from tests.support import PASSWORD, unique

PER_ACCOUNT = 4
ALL_ADDRESSES = 8

Connect = Callable[[], httpx.AsyncClient]


@pytest.fixture
async def account(database_url: str) -> AsyncIterator[tuple[str, Connect]]:
    """A staff account's email, and a way to call the app from a new address each time."""
    runtime = build_runtime(
        test_settings(
            database_url,
            login_attempts_per_account=PER_ACCOUNT,
            login_attempts_per_account_all_addresses=ALL_ADDRESSES,
        )
    )
    email = f"{unique('owner')}@sesame.test"
    with write_intent():
        async with runtime.session_factory() as session:
            await StaffService(session, PLATFORM, runtime).create(
                StaffCreate.model_validate(
                    {
                        "email": email,
                        "name": "Owner",
                        "role": "platform_admin",
                        "password": PASSWORD,
                    }
                )
            )
            await session.commit()
    app = create_app(runtime=runtime)

    def connect() -> httpx.AsyncClient:
        peer = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://sesame.test")

    try:
        yield email, connect
    finally:
        await runtime.close()


async def _attempts(client: httpx.AsyncClient, email: str, passwords: list[str]) -> list[int]:
    statuses = []
    for password in passwords:
        response = await client.post("/v1/auth/login", json={"email": email, "password": password})
        statuses.append(response.status_code)
    return statuses


async def test_a_stranger_is_refused_and_the_owner_still_signs_in(
    account: tuple[str, Connect],
) -> None:
    email, connect = account
    async with connect() as stranger:
        statuses = await _attempts(stranger, email, ["guess"] * (PER_ACCOUNT + 2) + [PASSWORD])
    assert statuses == [401] * PER_ACCOUNT + [429] * 3
    async with connect() as owner:
        assert await _attempts(owner, email, [PASSWORD]) == [200]


async def test_an_attack_from_many_addresses_gets_a_few_tries_per_address_and_the_owner_in(
    account: tuple[str, Connect],
) -> None:
    """Past the account's cap from all addresses, every further address has only a few
    tries at it; the owner still signs in from their own."""
    email, connect = account
    for _ in range(ALL_ADDRESSES // 2):
        async with connect() as attacker:
            assert await _attempts(attacker, email, ["guess", "guess"]) == [401, 401]
    async with connect() as attacker:
        assert await _attempts(attacker, email, ["guess"] * 5) == [401] * 3 + [429] * 2
    async with connect() as owner:
        assert await _attempts(owner, email, ["typo", PASSWORD]) == [401, 200]
