"""Helpers for tests that drive Sesame through its HTTP API, as clients do."""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import phonenumbers

from sesame.demo import PLATFORM
from sesame.jobs.repository import JobRepository
from sesame.keys.schedule import PIN_LOCK
from sesame.kit.clock import OffsetClock
from sesame.kit.db import write_intent
from sesame.models import Job
from sesame.runtime import Runtime
from sesame.staff.schemas import StaffCreate
from sesame.staff.service import StaffService

ShiftableClock = OffsetClock

_counter = iter(range(1, 10**9))


async def eventually(check: Callable[[], Any], seconds: float = 15, every: float = 0.05) -> Any:
    """The first truthy value ``check`` gives (it may be async), polled until ``seconds``
    pass: the one way tests wait for something to happen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"the condition never held within {seconds} s")
        await asyncio.sleep(every)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}-{secrets.token_hex(3)}"


def sms_code(sms: Any, phone: str) -> str:
    """The sign-in code of the last text to ``phone`` that carries one (an invitation may
    come after it)."""
    for message in reversed(sms.sent):
        if message.phone == phone:
            words = [w for w in message.text.split() if w.isdigit() and len(w) == 6]
            if words:
                return str(words[0])
    raise AssertionError(f"no sign-in code sent to {phone}")


def unique_phone() -> str:
    """A valid Korean mobile number nobody else in the session uses (probably)."""
    while True:
        candidate = f"+8210{secrets.randbelow(10**8):08d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
            return candidate


class Api:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        return await self.client.request(method, path, headers=all_headers, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)

    async def create(self, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.post(path, token=token, json=body)
        assert response.status_code == 201, (path, response.status_code, response.text)
        created: dict[str, Any] = response.json()
        return created

    async def login(self, email: str, password: str) -> dict[str, Any]:
        response = await self.post("/v1/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        tokens: dict[str, Any] = response.json()
        return tokens


PASSWORD = "correct horse battery staple"


async def lock_job(runtime: Runtime, device_id: str) -> Job:
    """The lock's PIN job, as the transaction that last changed its codes left it: when
    it is due is when Sesame next means to touch the lock."""
    async with runtime.session_factory() as session:
        job = await JobRepository(session).by_key(f"{PIN_LOCK}:{device_id}")
    assert job is not None, "the lock has no PIN job"
    return job


async def platform_admin_token(app: Any, runtime: Runtime) -> str:
    email = f"{unique('platform')}@sesame.test"
    with write_intent():
        async with runtime.session_factory() as session:
            await StaffService(session, PLATFORM, runtime).create(
                StaffCreate.model_validate(
                    {
                        "email": email,
                        "name": "Platform Admin",
                        "role": "platform_admin",
                        "password": PASSWORD,
                    }
                )
            )
            await session.commit()
    transport = httpx.ASGITransport(app=app, client=("10.255.255.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://sesame.test") as client:
        tokens = await Api(client).login(email, PASSWORD)
    return str(tokens["access_token"])


@dataclass
class World:
    """A partner with two sites; the first has a site manager and an installer."""

    partner_id: str
    site_id: str
    other_site_id: str
    ids: dict[str, str] = field(default_factory=dict)  # resource -> id in the first site
    other_site_ids: dict[str, str] = field(default_factory=dict)  # resource -> id, second site
    tokens: dict[str, str] = field(default_factory=dict)  # role -> bearer credential
    staff: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> account
    api_key: dict[str, Any] = field(default_factory=dict)


STAFF_ROLES = ("partner_admin", "site_manager", "installer")


async def _populate_site(api: Api, token: str, site_id: str, partner_id: str) -> dict[str, str]:
    building = await api.create(
        "/v1/buildings", token, {"site_id": site_id, "name": "101동", "floor_count": 15}
    )
    unit = await api.create(
        "/v1/units", token, {"building_id": building["id"], "name": "1001호", "floor": 10}
    )
    entrance = await api.create(
        "/v1/entrances",
        token,
        {
            "site_id": site_id,
            "name": "101동 공동현관",
            "kind": "common_entrance",
            "building_id": building["id"],
        },
    )
    person = await api.create(
        "/v1/people",
        token,
        {"partner_id": partner_id, "site_id": site_id, "phone": unique_phone(), "name": "김민준"},
    )
    household = await api.create(
        "/v1/households", token, {"person_id": person["id"], "unit_id": unit["id"], "role": "owner"}
    )
    device = await api.create(
        "/v1/devices",
        token,
        {
            "site_id": site_id,
            "kind": "entrance_reader",
            "name": "reader",
            "entrance_id": entrance["id"],
        },
    )
    keys = await api.get("/v1/keys", token=token, params={"person_id": person["id"]})
    lock = await api.create(
        "/v1/devices",
        token,
        {"site_id": site_id, "kind": "door_lock", "name": "unit lock", "unit_id": unit["id"]},
    )
    pin = await api.create("/v1/pin-codes", token, {"device_id": lock["id"], "code": "2468"})
    return {
        "site": site_id,
        "building": building["id"],
        "unit": unit["id"],
        "entrance": entrance["id"],
        "person": person["id"],
        "household": household["id"],
        "device": device["id"],
        "key": keys.json()["items"][0]["id"],
        "pin_code": pin["id"],
    }


async def make_world(api: Api, admin: str, runtime: Runtime) -> World:
    partner = await api.create("/v1/partners", admin, {"name": unique("Partner")})
    site = await api.create(
        "/v1/sites", admin, {"partner_id": partner["id"], "name": unique("Heights")}
    )
    other = await api.create(
        "/v1/sites", admin, {"partner_id": partner["id"], "name": unique("Tower")}
    )
    world = World(partner_id=partner["id"], site_id=site["id"], other_site_id=other["id"])
    world.ids = await _populate_site(api, admin, site["id"], partner["id"])
    world.ids["partner"] = partner["id"]
    world.other_site_ids = await _populate_site(api, admin, other["id"], partner["id"])
    for role in STAFF_ROLES:
        email = f"{unique(role)}@partner.test"
        account = await api.create(
            "/v1/staff",
            admin,
            {
                "email": email,
                "name": role,
                "role": role,
                "password": PASSWORD,
                "partner_id": partner["id"],
                "site_ids": [site["id"]] if role != "partner_admin" else [],
            },
        )
        world.staff[role] = account
        world.tokens[role] = (await api.login(email, PASSWORD))["access_token"]
    key = await api.create(
        "/v1/api-keys",
        admin,
        {
            "partner_id": partner["id"],
            "name": "integration",
            "scopes": [
                "partners:write",
                "sites:write",
                "people:write",
                "devices:write",
                "keys:write",
            ],
        },
    )
    world.api_key = key
    world.tokens["api_key"] = key["key"]
    world.ids["staff_account"] = world.staff["installer"]["id"]
    world.ids["api_key"] = key["id"]
    return world


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``sesame serve`` in a subprocess, as an operator runs it."""

    def __init__(self, env: dict[str, str], port: int, args: tuple[str, ...] = ()) -> None:
        import os
        import subprocess
        import sys
        from pathlib import Path

        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = open(env.get("SESAME_TEST_LOG", os.devnull), "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sesame", "serve", "--port", str(port), *args],
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=env.get("SESAME_TEST_CWD", str(Path.cwd())),
        )

    def wait_ready(self, timeout: float = 60) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError("server did not answer /healthz")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except Exception:
            self.process.kill()
        self.log.close()


def sesame_command(
    env: dict[str, str], *args: str, stdin: str = "", cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``sesame`` command as an operator would; the caller checks the outcome."""
    return subprocess.run(
        [sys.executable, "-m", "sesame", *args],
        env={**os.environ, **env},
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_cli(env: dict[str, str], *args: str, stdin: str = "", cwd: str | None = None) -> str:
    """Run the ``sesame`` command and insist that it succeeds; returns what it printed."""
    result = sesame_command(env, *args, stdin=stdin, cwd=cwd)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


@asynccontextmanager
async def served_world(runtime: Runtime, address: str) -> AsyncIterator[tuple[Api, World]]:
    """An app started on ``runtime`` (its lifespan running), an API client calling from
    ``address``, and a partner's world made through it — for tests with a runtime of
    their own (a database of their own, other processes at work)."""
    from sesame.app import create_app

    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://sesame.test") as c:
            api = Api(c)
            yield api, await make_world(api, await platform_admin_token(app, runtime), runtime)
