"""A client generated from the served OpenAPI document makes a partner's calls.

openapi-python-client turns ``/openapi.json`` into a typed package, as a partner's
developers would; the test then drives a partner's first day with it and nothing else:
a site down to a household, a reader online, a key issued and revoked, the entrance
opened and the attempt read, a list paged, a guest pass and its image, the ledger, and
errors parsed. A document that declares an optional body as "model or null", omits
``Idempotency-Key``, leaves a binary or text answer without a schema, calls an
authenticated operation public, or has an operation id that is no identifier, fails
here: at generation (any warning) or at the call it breaks.
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.conftest import next_address
from tests.device_fixtures import Fleet
from tests.support import eventually, unique, unique_phone

PACKAGE = "sesame_client"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
CONFIG = {
    "package_name_override": PACKAGE,
    "project_name_override": PACKAGE,
    # The generator reads binary answers as application/octet-stream only.
    "content_type_overrides": {
        "image/png": "application/octet-stream",
        "image/svg+xml": "application/octet-stream",
    },
    "post_hooks": [],
}


@pytest.fixture
def generated(tmp_path: Path, device_app: Any) -> Iterator[Any]:
    """The client package generated from the document the app serves."""
    document = device_app.openapi()
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    result = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(tmp_path / "openapi.json"),
            "--config",
            str(tmp_path / "config.json"),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]
    sys.path.insert(0, str(tmp_path))
    try:
        yield _Client(importlib.import_module(PACKAGE))
    finally:
        sys.path.remove(str(tmp_path))


class _Modules:
    """A generated package's modules as attributes, imported when first named:
    ``api.sites.create_site``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, name: str) -> Any:
        module = importlib.import_module(f"{self.name}.{name}")
        return _Modules(module.__name__) if hasattr(module, "__path__") else module


class _Client:
    def __init__(self, package: ModuleType) -> None:
        self.package = package

    def __call__(self, dotted: str) -> Any:
        module = importlib.import_module(f"{PACKAGE}.{dotted}")
        return _Modules(module.__name__) if hasattr(module, "__path__") else module

    def model(self, name: str, data: dict[str, Any]) -> Any:
        models = importlib.import_module(f"{PACKAGE}.models")
        return getattr(models, name).from_dict(data)


def client_for(gen: _Client, app: Any, token: str | None) -> Any:
    transport = httpx.ASGITransport(app=app, client=(next_address(), 40000))
    arguments: dict[str, Any] = {
        "base_url": "http://sesame.test",
        "httpx_args": {"transport": transport},
        "raise_on_unexpected_status": True,
    }
    if token is None:
        return gen("client").Client(**arguments)
    return gen("client").AuthenticatedClient(token=token, **arguments)


async def test_a_generated_client_runs_a_partners_flow(
    generated: _Client, device_app: Any, fleet: Fleet
) -> None:
    gen = generated
    api = gen("api")
    partner = client_for(gen, device_app, fleet.world.tokens["api_key"])

    async def create(operation: Any, model: str, body: dict[str, Any], **kwargs: Any) -> Any:
        response = await operation.asyncio_detailed(
            client=partner, body=gen.model(model, body), **kwargs
        )
        assert response.status_code == 201, response.content
        return response.parsed

    # A site down to a household; a retried POST with its Idempotency-Key is one site.
    once = str(uuid.uuid4())
    site = await create(
        api.sites.create_site, "SiteCreate", {"name": unique("Client")}, idempotency_key=once
    )
    again = await create(
        api.sites.create_site, "SiteCreate", {"name": site.name}, idempotency_key=once
    )
    assert again.id == site.id
    building = await create(
        api.buildings.create_building,
        "BuildingCreate",
        {"site_id": str(site.id), "name": "101동", "floor_count": 5},
    )
    units = [
        await create(
            api.units.create_unit,
            "UnitCreate",
            {"building_id": str(building.id), "name": f"{n}01호", "floor": n},
        )
        for n in (1, 2, 3)
    ]
    entrance = await create(
        api.entrances.create_entrance,
        "EntranceCreate",
        {
            "site_id": str(site.id),
            "building_id": str(building.id),
            "name": "101동 공동현관",
            "kind": "common_entrance",
        },
    )
    person = await create(
        api.people.create_person,
        "PersonCreate",
        {"site_id": str(site.id), "phone": unique_phone(), "name": "김하늘"},
    )
    household = await create(
        api.households.create_household,
        "HouseholdCreate",
        {"person_id": str(person.id), "unit_id": str(units[0].id), "role": "owner"},
    )
    assert household.unit_id == units[0].id

    # A list, paged one item at a time by its cursor.
    seen: list[Any] = []
    cursor: Any = gen("types").UNSET
    while True:
        page = await api.units.list_units.asyncio(
            client=partner, site_id=site.id, limit=1, cursor=cursor
        )
        seen += [unit.id for unit in page.items]
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert sorted(map(str, seen)) == sorted(str(u.id) for u in units)

    # A key issued and revoked.
    key = await create(
        api.keys.create_key,
        "KeyCreate",
        {
            "person_id": str(person.id),
            "kind": "guest",
            "entrance_id": str(entrance.id),
            "ends_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        },
    )
    assert key.status.value == "active"
    guest_pass = await api.keys.get_guest_pass.asyncio(key.id, client=partner)
    assert guest_pass.key.id == key.id
    image = await api.passes.show_pass.asyncio_detailed(
        guest_pass.token, client=client_for(gen, device_app, None), format_="png"
    )
    assert image.status_code == 200
    assert image.parsed.payload.read().startswith(b"\x89PNG")
    revoked = await api.keys.delete_key.asyncio_detailed(key.id, client=partner)
    assert revoked.status_code == 204
    assert (await api.keys.get_key.asyncio(key.id, client=partner)).status.value == "revoked"

    # The entrance opened through its reader, with no body (the call a partner writes
    # first), and the attempt read back.
    device = await create(
        api.devices.provision_device,
        "DeviceCreate",
        {
            "site_id": str(site.id),
            "kind": "entrance_reader",
            "name": "reader",
            "entrance_id": str(entrance.id),
        },
    )
    await fleet.start(fleet.simulator(device.to_dict()))
    attempt = await api.entrances.open_entrance.asyncio(
        client=partner, entrance_id=entrance.id, wait=5
    )
    assert attempt.status.value == "success", attempt
    read = await api.action_attempts.get_action_attempt.asyncio(attempt.id, client=partner)
    assert (read.id, read.status.value) == (attempt.id, "success")

    # Errors parse into the one error model.
    missing = await api.sites.get_site.asyncio_detailed(uuid.uuid4(), client=partner)
    assert missing.status_code == 404
    assert missing.parsed.type_ == "not_found"
    invalid = await api.units.create_unit.asyncio_detailed(
        client=partner,
        body=gen.model("UnitCreate", {"building_id": str(building.id), "name": "", "floor": 1}),
    )
    assert invalid.status_code == 422
    assert invalid.parsed.type_ == "validation_error"
    assert ["body", "name"] in [error.path for error in invalid.parsed.errors]


async def test_the_generated_ledger_calls_need_a_credential(
    generated: _Client, device_app: Any, fleet: Fleet
) -> None:
    """Under the default ``SESAME_LEDGER_ACCESS`` the ledger is read signed in: the
    generated calls take an authenticated client, and the checkpoint is text."""
    ledger = generated("api.ledger")
    authenticated = generated("client").AuthenticatedClient
    for name in ("get_ledger", "get_ledger_checkpoint", "list_ledger_entries"):
        client = inspect.signature(getattr(ledger, name).asyncio_detailed).parameters["client"]
        assert client.annotation in (authenticated, "AuthenticatedClient"), (name, client)
    anonymous = await ledger.get_ledger.asyncio_detailed(
        client=client_for(generated, device_app, None)
    )
    assert anonymous.status_code == 401
    assert anonymous.parsed.type_ == "unauthorized"
    partner = client_for(generated, device_app, fleet.world.tokens["api_key"])
    info = await ledger.get_ledger.asyncio(client=partner)

    async def checkpoint() -> Any:
        response = await ledger.get_ledger_checkpoint.asyncio_detailed(client=partner)
        return response if response.status_code == 200 else None

    served = await eventually(checkpoint)
    assert isinstance(served.parsed, str)
    assert served.parsed.startswith(f"{info.origin}\n")
