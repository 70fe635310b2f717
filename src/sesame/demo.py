"""``sesame demo``: a complex a newcomer can explore at once.

One partner, one apartment complex in Seoul with two buildings (101동, 102동) of ten floors
and four units a floor, a common entrance per building, a partner admin, a site manager,
an installer, a platform administrator, a few residents in their households and an API
key. Running it again changes nothing: the credentials it made are kept in
``var/demo-credentials.json`` (mode 0600, next to the SQLite database) and reused while
they still work, so scripts and API clients set up against one run keep working after
the next. ``reset=True`` (``sesame demo --reset``) makes new ones and revokes the old.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sesame.auth.api_keys import ApiKeyService
from sesame.auth.principal import API_KEY_SCOPES, Principal, parse_api_key
from sesame.auth.repository import ApiKeyRepository
from sesame.auth.service import create_api_key
from sesame.devices.broker import verify_password
from sesame.devices.repository import DeviceRepository
from sesame.devices.schemas import DeviceCreate
from sesame.devices.service import DeviceService
from sesame.kit.db import write_intent
from sesame.kit.repository import TenantScope
from sesame.kit.security import digest, equal
from sesame.models import (
    ApiKey,
    DeviceKind,
    DeviceStatus,
    EntranceKind,
    HouseholdRole,
    PartnerKind,
    SiteKind,
    StaffRole,
)
from sesame.partners.repository import PartnerRepository
from sesame.partners.schemas import PartnerCreate
from sesame.partners.service import PartnerService
from sesame.people.repository import HouseholdRepository, PersonRepository
from sesame.people.schemas import HouseholdCreate, PersonCreate
from sesame.people.service import HouseholdService, PersonService
from sesame.runtime import Runtime
from sesame.sites.repository import (
    BuildingRepository,
    EntranceRepository,
    SiteRepository,
    UnitRepository,
)
from sesame.sites.schemas import BuildingCreate, EntranceCreate, SiteCreate, UnitCreate
from sesame.sites.service import BuildingService, EntranceService, SiteService, UnitService
from sesame.staff.repository import StaffRepository
from sesame.staff.schemas import StaffCreate
from sesame.staff.service import StaffService

PARTNER_NAME = "Sesame Demo Properties"
SITE_NAME = "Sesame Heights 세서미하이츠"
BUILDINGS = ("101동", "102동")
FLOORS = 10
UNITS_PER_FLOOR = 4
API_KEY_NAME = "demo key"

STAFF = (
    ("platform@demo.sesame.dev", "Demo Platform Admin", StaffRole.PLATFORM_ADMIN),
    ("admin@demo.sesame.dev", "Demo Partner Admin", StaffRole.PARTNER_ADMIN),
    ("manager@demo.sesame.dev", "김관리 (site manager)", StaffRole.SITE_MANAGER),
    ("installer@demo.sesame.dev", "Demo Installer", StaffRole.INSTALLER),
)
RESIDENTS = (
    ("+821000000001", "김민준", "ko-KR", "101동", "1001호", HouseholdRole.OWNER),
    ("+821000000002", "이서연", "ko-KR", "101동", "1001호", HouseholdRole.MEMBER),
    ("+821000000003", "Alex Kim", "en", "101동", "502호", HouseholdRole.TENANT),
    ("+821000000004", "박지훈", "ko-KR", "102동", "304호", HouseholdRole.OWNER),
)

PLATFORM = Principal(
    kind="staff", id="sesame-cli", scope=TenantScope.platform(), role=StaffRole.PLATFORM_ADMIN
)


DEVICES_FILE = Path("var") / "demo-devices.json"
CREDENTIALS_FILE = Path("var") / "demo-credentials.json"


@dataclass
class DemoCredentials:
    partner_id: str = ""
    site_id: str = ""
    passwords: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    api_key: str = ""
    residents: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    devices: list[dict[str, str]] = field(default_factory=list)
    open_entrance_id: str = ""


def unit_name(floor: int, number: int) -> str:
    return f"{floor}{number:02d}호"


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by its owner only from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def _read_json(path: Path) -> Any:
    """What an earlier run wrote, or None when there is nothing usable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _saved_credentials() -> tuple[dict[str, str], str | None, dict[str, str]]:
    """The staff passwords, API key and device passwords an earlier run handed out."""
    saved = _read_json(CREDENTIALS_FILE)
    saved = saved if isinstance(saved, dict) else {}
    passwords = saved.get("passwords")
    api_key = saved.get("api_key")
    devices = _read_json(DEVICES_FILE)
    return (
        {str(k): str(v) for k, v in passwords.items()} if isinstance(passwords, dict) else {},
        api_key if isinstance(api_key, str) else None,
        {
            str(d["device_id"]): str(d["password"])
            for d in (devices if isinstance(devices, list) else [])
            if isinstance(d, dict) and "device_id" in d and "password" in d
        },
    )


async def seed_demo(runtime: Runtime, *, reset: bool = False) -> DemoCredentials:
    """Create what is missing of the demo; keep the credentials an earlier run printed
    while they still work (unless ``reset``), make new ones for the rest."""
    out = DemoCredentials()
    saved_passwords, saved_key, saved_devices = ({}, None, {}) if reset else _saved_credentials()
    scope = TenantScope.platform()
    with write_intent():
        async with runtime.session_factory() as session:
            args: tuple[Any, Principal, Runtime] = (session, PLATFORM, runtime)

            partner = await PartnerRepository(session).find_by(scope, name=PARTNER_NAME)
            if partner is None:
                partner = await PartnerService(*args).create(
                    PartnerCreate(name=PARTNER_NAME, kind=PartnerKind.PROPERTY_MANAGER)
                )
            site = await SiteRepository(session).find_by(
                scope, partner_id=partner.id, name=SITE_NAME
            )
            if site is None:
                site = await SiteService(*args).create(
                    SiteCreate(
                        partner_id=partner.id,
                        name=SITE_NAME,
                        kind=SiteKind.APARTMENT_COMPLEX,
                        address="서울특별시 강남구 테헤란로 1",
                        time_zone="Asia/Seoul",
                    )
                )
            out.partner_id, out.site_id = str(partner.id), str(site.id)

            units: dict[tuple[str, str], Any] = {}
            for building_name in BUILDINGS:
                building = await BuildingRepository(session).find_by(
                    scope, site_id=site.id, name=building_name
                )
                if building is None:
                    building = await BuildingService(*args).create(
                        BuildingCreate(site_id=site.id, name=building_name, floor_count=FLOORS)
                    )
                for floor in range(1, FLOORS + 1):
                    for number in range(1, UNITS_PER_FLOOR + 1):
                        name = unit_name(floor, number)
                        unit = await UnitRepository(session).find_by(
                            scope, building_id=building.id, name=name
                        )
                        if unit is None:
                            unit = await UnitService(*args).create(
                                UnitCreate(building_id=building.id, name=name, floor=floor)
                            )
                        units[(building_name, name)] = unit
                entrance_name = f"{building_name} 공동현관"
                if (
                    await EntranceRepository(session).find_by(
                        scope, site_id=site.id, name=entrance_name
                    )
                    is None
                ):
                    await EntranceService(*args).create(
                        EntranceCreate(
                            site_id=site.id,
                            name=entrance_name,
                            kind=EntranceKind.COMMON_ENTRANCE,
                            building_id=building.id,
                        )
                    )

            for email, name, role in STAFF:
                platform_staff = role is StaffRole.PLATFORM_ADMIN
                password = saved_passwords.get(email) or secrets.token_urlsafe(12)
                staff = await StaffRepository(session).by_email(email)
                if staff is None:
                    await StaffService(*args).create(
                        StaffCreate.model_validate(
                            {
                                "email": email,
                                "name": name,
                                "role": role,
                                "password": password,
                                "partner_id": None if platform_staff else partner.id,
                                "site_ids": [site.id] if role.site_scoped else [],
                            }
                        )
                    )
                else:
                    if email not in saved_passwords or not await runtime.passwords.verify(
                        staff.password_hash, password
                    ):
                        password = secrets.token_urlsafe(12)
                        staff.password_hash = await runtime.passwords.hash(password)
                    staff.is_active = True
                out.passwords[email] = password
                out.roles[email] = role.value

            for phone, name, locale, building_name, unit_label, household_role in RESIDENTS:
                person = await PersonRepository(session).find_by(
                    scope, partner_id=partner.id, phone=phone
                )
                if person is None:
                    person = await PersonService(*args).create(
                        PersonCreate(
                            partner_id=partner.id,
                            site_id=site.id,
                            phone=phone,
                            name=name,
                            locale=locale,
                        )
                    )
                unit = units[(building_name, unit_label)]
                if (
                    await HouseholdRepository(session).find_by(
                        scope, person_id=person.id, unit_id=unit.id
                    )
                    is None
                ):
                    await HouseholdService(*args).create(
                        HouseholdCreate(person_id=person.id, unit_id=unit.id, role=household_role)
                    )
                out.residents.append((phone, name))

            out.api_key = await _demo_api_key(session, runtime, partner.id, saved_key)
            out.devices = await _demo_devices(session, runtime, site.id, units, saved_devices)
            out.counts = {
                "buildings": len(BUILDINGS),
                "units": len(units),
                "entrances": len(BUILDINGS) + 1,
                "residents": len(RESIDENTS),
                "devices": len(out.devices),
            }
            out.open_entrance_id = out.devices[0]["entrance_id"]
            await session.commit()
    write_private(
        CREDENTIALS_FILE,
        json.dumps({"passwords": out.passwords, "api_key": out.api_key}, indent=2) + "\n",
    )
    write_private(DEVICES_FILE, json.dumps(out.devices, ensure_ascii=False, indent=2) + "\n")
    return out


async def _demo_api_key(session: Any, runtime: Runtime, partner_id: Any, saved: str | None) -> str:
    """The saved key while it is the partner's live demo key, or put back if this database
    does not know it (a new database); else a new key. A key put back or made revokes the
    partner's other demo keys."""
    keys = ApiKeyService(session, PLATFORM, runtime)
    parsed = parse_api_key(saved) if saved else None
    existing = await ApiKeyRepository(session).by_prefix(parsed[0]) if parsed else None
    if (
        saved is not None
        and parsed is not None
        and existing is not None
        and existing.partner_id == partner_id
        and existing.name == API_KEY_NAME
        and existing.revoked_at is None
        and existing.expires_at is None
        and equal(existing.secret_digest, digest(parsed[1]))
    ):
        return saved
    scope = TenantScope.platform()
    while (
        old := await keys.repository.find_by(
            scope, partner_id=partner_id, name=API_KEY_NAME, revoked_at=None
        )
    ) is not None:
        await keys.delete(old.id)
    if saved is not None and parsed is not None and existing is None:
        prefix, secret = parsed
        await keys.repository.add(
            ApiKey(
                partner_id=partner_id,
                name=API_KEY_NAME,
                prefix=prefix,
                secret_digest=digest(secret),
                scopes=list(API_KEY_SCOPES),
                expires_at=None,
            )
        )
        return saved
    _, api_key = await create_api_key(
        session,
        PLATFORM,
        partner_id=partner_id,
        name=API_KEY_NAME,
        scopes=list(API_KEY_SCOPES),
        expires_at=None,
    )
    return api_key


async def _demo_devices(
    session: Any,
    runtime: Runtime,
    site_id: Any,
    units: dict[tuple[str, str], Any],
    saved: dict[str, str],
) -> list[dict[str, str]]:
    """A reader per common entrance, a door lock and a doorbell at 101동 1001호, and an
    elevator agent, with the credentials of ``saved`` (device id → password) that still
    work or new ones, for ``var/demo-devices.json`` and the simulators."""
    scope = TenantScope.platform()
    args: tuple[Any, Principal, Runtime] = (session, PLATFORM, runtime)
    entrances = EntranceRepository(session)
    unit = units[("101동", "1001호")]
    unit_door = await entrances.find_by(scope, site_id=site_id, name="101동 1001호 현관")
    if unit_door is None:
        unit_door = await EntranceService(*args).create(
            EntranceCreate(
                site_id=site_id,
                name="101동 1001호 현관",
                kind=EntranceKind.UNIT_DOOR,
                unit_id=unit.id,
            )
        )
    wanted: list[tuple[str, DeviceKind, Any, Any]] = []
    for building_name in BUILDINGS:
        entrance = await entrances.find_by(scope, site_id=site_id, name=f"{building_name} 공동현관")
        wanted.append(
            (
                f"{building_name} 공동현관 리더",
                DeviceKind.ENTRANCE_READER,
                entrance.id if entrance else None,
                None,
            )
        )
    wanted += [
        ("101동 1001호 도어락", DeviceKind.DOOR_LOCK, unit_door.id, unit.id),
        ("101동 1001호 초인종", DeviceKind.DOORBELL, None, unit.id),
        ("101동 엘리베이터 에이전트", DeviceKind.ELEVATOR_AGENT, None, None),
    ]
    service = DeviceService(*args)
    fleet = []
    for name, kind, entrance_id, unit_id in wanted:
        device = await DeviceRepository(session).find_by(
            scope, site_id=site_id, name=name, status=DeviceStatus.ACTIVE
        )
        if device is None:
            device, secret = await service.provision(
                DeviceCreate(
                    site_id=site_id,
                    kind=kind,
                    name=name,
                    vendor="sesame",
                    model="simulator",
                    entrance_id=entrance_id,
                    unit_id=unit_id,
                )
            )
        elif verify_password(device.credential_hash, saved.get(str(device.id), "")):
            secret = saved[str(device.id)]
        else:
            device, secret = await service.rotate_credentials(device.id)
        fleet.append(
            {
                "device_id": str(device.id),
                "kind": kind.value,
                "name": name,
                "password": secret,
                "url": runtime.settings.device_broker_url,
                "entrance_id": str(entrance_id or ""),
            }
        )
    return fleet
