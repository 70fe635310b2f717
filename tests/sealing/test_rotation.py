"""The master secret changes: what was made under the old one keeps working through a
restart with the new one (the old one kept as previous), ``sesame secrets rotate``, and a
restart without the old one — the ledger's and the sites' keys, PIN codes, Web Push,
idempotent replays, sessions and one-time codes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text

from sesame.app import create_app
from sesame.auth.sms import MemorySmsSender
from sesame.keys.credentials import public_key_from
from sesame.kit.db import create_engine, write_intent
from sesame.kit.keyring import KeyRing, key_id_of
from sesame.kit.security import derive_key, seal
from sesame.ledger.note import Verifier, open_checkpoint
from sesame.migrations import upgrade
from sesame.models import Base
from sesame.notifications.channels.base import Message, Outcome
from sesame.notifications.channels.webpush import vapid_key_from_secret, vapid_public_key_b64
from sesame.notifications.install import build_channels
from sesame.notifications.testing.webpush import BrowserSubscription, PushServiceStandin
from sesame.runtime import Runtime, build_runtime
from sesame.sealing.repository import SEALED_TABLES
from tests.conftest import BACKENDS, drop_postgres_database, fresh_database, test_settings
from tests.support import (
    PASSWORD,
    Api,
    ShiftableClock,
    World,
    make_world,
    platform_admin_token,
    run_cli,
    sms_code,
)

SECRET_A = "the-first-master-secret-of-this-deployment-0123456789"
SECRET_B = "the-second-master-secret-of-this-deployment-9876543210"


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    url = await fresh_database(request.param, tmp_path)
    await asyncio.to_thread(upgrade, url)
    yield url
    if request.param == "postgresql":
        await drop_postgres_database(url)


@pytest.fixture
async def push() -> AsyncIterator[PushServiceStandin]:
    async with PushServiceStandin() as service:
        yield service


@dataclass
class Served:
    api: Api
    runtime: Runtime
    app: Any


@asynccontextmanager
async def serving(
    database: str, secret: str, previous: Sequence[str] = (), sms: MemorySmsSender | None = None
) -> AsyncIterator[Served]:
    """A process started with these secrets, as `sesame serve` starts one."""
    settings = test_settings(database, secret_key=secret, secret_keys_previous=list(previous))
    runtime = build_runtime(settings, clock=ShiftableClock(), sms_sender=sms or MemorySmsSender())
    app = create_app(runtime=runtime)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("10.9.3.1", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://sesame.test") as c:
                yield Served(Api(c), runtime, app)
    finally:
        await runtime.close()


def operator_env(database: str, secret: str, previous: Sequence[str] = ()) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESAME_")}
    env.update(
        {
            "SESAME_ENV": "development",
            "SESAME_DATABASE_URL": database,
            "SESAME_SECRET_KEY": secret,
            "SESAME_SECRET_KEYS_PREVIOUS": json.dumps(list(previous)),
            "SESAME_LOG_LEVEL": "warning",
        }
    )
    return env


@dataclass
class Made:
    """What the deployment made under its first secret, and what it answered then."""

    world: World
    admin: str
    staff: dict[str, Any]  # a site manager's access and refresh tokens
    ledger: dict[str, Any]
    signing_keys: list[dict[str, Any]]
    lock_id: str
    vapid_public_key: str
    browser: BrowserSubscription
    idempotency_key: str
    idempotent_body: dict[str, Any]
    idempotent_answer: dict[str, Any]
    phone: str
    code: str
    extra: dict[str, Any] = field(default_factory=dict)


async def make_everything(served: Served, push: PushServiceStandin, sms: MemorySmsSender) -> Made:
    api = served.api
    admin = await platform_admin_token(served.app, served.runtime)
    world = await make_world(api, admin, served.runtime)
    token = world.tokens["partner_admin"]
    staff = await api.login(world.staff["site_manager"]["email"], PASSWORD)
    site = world.site_id
    assert (await api.post(f"/v1/sites/{site}/signing-keys/rotate", token=token)).status_code == 201
    signing_keys = (await api.get(f"/v1/sites/{site}/signing-keys", token=token)).json()
    pin = (await api.get(f"/v1/pin-codes/{world.ids['pin_code']}", token=token)).json()
    assert pin["code"] == "2468"
    await api.create(
        "/v1/webhook-endpoints", token, {"url": "https://partner.example/hooks"}
    )  # its secret is sealed too
    vapid = (await api.get("/v1/notifications/web-push-key")).json()["public_key"]
    browser = push.subscribe(application_server_key=vapid)
    idempotency_key = uuid.uuid4().hex
    body = {"site_id": site, "name": "102동", "floor_count": 12}
    first = await api.post(
        "/v1/buildings", token=token, json=body, headers={"Idempotency-Key": idempotency_key}
    )
    assert first.status_code == 201, first.text
    ledger = await checkpointed_ledger(api, token)
    person = (await api.get(f"/v1/people/{world.ids['person']}", token=token)).json()
    phone = str(person["phone"])
    assert (await api.post("/v1/auth/codes", json={"phone": phone})).status_code == 202
    code = sms_code(sms, phone)
    return Made(
        world=world,
        admin=admin,
        staff=staff,
        ledger=ledger,
        signing_keys=signing_keys,
        lock_id=pin["device_id"],
        vapid_public_key=vapid,
        browser=browser,
        idempotency_key=idempotency_key,
        idempotent_body=body,
        idempotent_answer=first.json(),
        phone=phone,
        code=code,
    )


async def checkpointed_ledger(api: Api, token: str, at_least: int = 1) -> dict[str, Any]:
    """The ledger's description once a checkpoint covers ``at_least`` entries, with the
    checkpoint verified against the log key the ledger publishes."""
    for _ in range(200):
        info: dict[str, Any] = (await api.get("/v1/ledger", token=token)).json()
        note = await api.get("/v1/ledger/checkpoint", token=token)
        if note.status_code == 200 and int(note.text.split("\n")[1]) >= at_least:
            checkpoint, _ = open_checkpoint(note.text, Verifier.parse(info["log_key"]))
            assert checkpoint.origin == info["origin"]
            return info
        await asyncio.sleep(0.05)
    raise AssertionError(f"no checkpoint covering {at_least} entries")


async def still_works(served: Served, made: Made, push: PushServiceStandin) -> None:
    """Everything made under the first secret works on this process."""
    api, site = served.api, made.world.site_id
    admin = made.world.staff["partner_admin"]["email"]
    token = (await api.login(admin, PASSWORD))["access_token"]

    # The ledger is the same log: same origin and key, and it still signs new checkpoints.
    before = (await api.get("/v1/ledger", token=token)).json()
    assert (before["origin"], before["log_key"]) == (
        made.ledger["origin"],
        made.ledger["log_key"],
    )
    await api.create(
        "/v1/keys",
        token,
        {
            "person_id": made.world.ids["person"],
            "kind": "courier",
            "carrier": "CJ Logistics",
            "building_id": made.world.ids["building"],
        },
    )
    after = await checkpointed_ledger(api, token, at_least=before["size"] + 1)
    assert after["log_key"] == made.ledger["log_key"]

    # The site's signing keys are the ones its readers trust, and still sign.
    published = (await api.get(f"/v1/sites/{site}/signing-keys", token=token)).json()
    assert published == made.signing_keys
    resident = made.extra["resident"]
    issued = await api.post("/v1/me/credentials", token=resident["access_token"])
    assert issued.status_code == 200, issued.text
    trusted = {k["id"]: k["public_key"] for k in published}
    assert issued.json()
    for credential in issued.json():
        kid = jwt.get_unverified_header(credential["token"])["kid"]
        jwt.PyJWS().decode(credential["token"], public_key_from(trusted[kid]), ["EdDSA"])

    # The PIN code opens, and the same code on the same lock is still a duplicate.
    pin = await api.get(f"/v1/pin-codes/{made.world.ids['pin_code']}", token=token)
    assert pin.status_code == 200, pin.text
    assert pin.json()["code"] == "2468"
    duplicate = await api.post(
        "/v1/pin-codes", token=token, json={"device_id": made.lock_id, "code": "2468"}
    )
    assert duplicate.status_code == 409, duplicate.text
    assert duplicate.json()["type"] == "duplicate_access_code"

    # The idempotent POST replays its stored answer.
    replay = await api.post(
        "/v1/buildings",
        token=token,
        json=made.idempotent_body,
        headers={"Idempotency-Key": made.idempotency_key},
    )
    assert replay.status_code == 201, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == made.idempotent_answer

    # The VAPID key is the one the browser subscribed with: its push service accepts.
    assert (await api.get("/v1/notifications/web-push-key")).json() == {
        "public_key": made.vapid_public_key
    }
    webpush = build_channels(served.runtime)["webpush"]
    try:
        [result] = await webpush.send_many([push_message(made.browser)])
    finally:
        await webpush.aclose()
    assert result.outcome is Outcome.SENT, result
    assert push.rejections == []


def push_message(browser: BrowserSubscription) -> Message:
    return Message(
        delivery_id=uuid.uuid4(),
        transaction_id=uuid.uuid4().hex,
        address=browser.endpoint,
        title="Doorbell",
        body="누군가 1층 현관에서 호출했습니다",
        category="doorbell",
        locale="ko",
        event_type="doorbell.rang",
        keys=browser.keys,
    )


async def operator(env: dict[str, str], *args: str) -> str:
    """The command in another process, while this one keeps serving."""
    return await asyncio.to_thread(run_cli, env, *args)


def rotated(printed: str) -> int:
    match = re.search(r"done: (\d+) values re-sealed", printed)
    assert match is not None, printed
    return int(match.group(1))


@pytest.mark.timeout(480)  # three starts and the command thrice, on a loaded machine
async def test_a_new_master_secret_keeps_everything_working(
    database: str, push: PushServiceStandin
) -> None:
    """Secret A makes the data; B with A as previous, then `sesame secrets rotate`, then B
    alone: the ledger, signing keys, PINs, Web Push and replays all carry on."""
    sms = MemorySmsSender()
    async with serving(database, SECRET_A, sms=sms) as first:
        made = await make_everything(first, push, sms)

    # A restart with the new secret, the old one kept for reading.
    async with serving(database, SECRET_B, [SECRET_A], sms=sms) as second:
        api = second.api
        # A session signed in under A goes on; the code sent under A still signs in.
        me = await api.get("/v1/me", token=made.staff["access_token"])
        assert me.status_code == 200, me.text
        verified = await api.post(
            "/v1/auth/codes/verify", json={"phone": made.phone, "code": made.code}
        )
        assert verified.status_code == 200, verified.text
        made.extra["resident"] = verified.json()
        assert jwt.get_unverified_header(verified.json()["access_token"])["kid"] == key_id_of(
            SECRET_B
        )
        await still_works(second, made, push)

        # Re-sealing, while this process serves: progress per table, in batches.
        env = operator_env(database, SECRET_B, [SECRET_A])
        printed = await operator(env, "secrets", "rotate", "--batch-size", "1")
        assert f"re-sealing under key {key_id_of(SECRET_B)}" in printed
        # The world has a PIN code on a lock at each of its two sites.
        assert "PIN codes: 1/2 checked, 1 re-sealed" in printed, printed
        assert "PIN codes: 2/2 checked, 2 re-sealed" in printed, printed
        assert re.search(r"ledger key: 1/1 checked, 1 re-sealed", printed), printed
        assert re.search(r"platform keys: 1/1 checked, 1 re-sealed", printed), printed
        assert rotated(printed) > 0
        # Idempotent: a second run finds nothing left to do.
        assert rotated(await operator(env, "secrets", "rotate")) == 0
        await still_works(second, made, push)

    # The old secret dropped: everything opens under B alone.
    alone = operator_env(database, SECRET_B)
    assert "unreadable" not in await operator(alone, "secrets", "rotate")
    async with serving(database, SECRET_B, sms=sms) as third:
        api = third.api
        # Access tokens signed under A end with A (they last minutes); sessions go on.
        assert (await api.get("/v1/me", token=made.staff["access_token"])).status_code == 401
        refreshed = await api.post(
            "/v1/auth/refresh", json={"refresh_token": made.staff["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        me = await api.get("/v1/me", token=refreshed.json()["access_token"])
        assert me.status_code == 200, me.text
        await still_works(third, made, push)


async def write_as_before_key_ids(database: str, secret: str) -> None:
    """Turn the stored values into what the version before key ids wrote: sealed without
    a tag, and no VAPID key stored (it was derived from the secret each time)."""
    ring = KeyRing(secret)
    engine = create_engine(database)
    with write_intent():
        async with engine.begin() as connection:
            for table, column, purpose, context in LEGACY_COLUMNS:
                rows = await connection.execute(text(f"SELECT * FROM {table}"))  # noqa: S608
                for row in rows.mappings().all():
                    if row[column] is None:
                        continue
                    ad = context(row)
                    plaintext = ring.purpose(purpose).unseal(row[column], ad)
                    await connection.execute(
                        text(f"UPDATE {table} SET {column} = :value WHERE {column} = :old"),  # noqa: S608
                        {
                            "value": seal(derive_key(secret, purpose), plaintext, ad),
                            "old": row[column],
                        },
                    )
            await connection.execute(text("DELETE FROM platform_keys"))
    await engine.dispose()


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


LEGACY_COLUMNS = (
    ("ledger_keys", "sealed_private_key", "ledger-key", lambda r: r["origin"].encode()),
    (
        "site_signing_keys",
        "sealed_private_key",
        "site-signing-keys",
        lambda r: str(_uuid(r["site_id"])).encode(),
    ),
    ("pin_codes", "sealed_code", "pin-codes", lambda r: _uuid(r["id"]).bytes),
    ("webhook_endpoints", "sealed_secret", "webhook-secrets", lambda r: _uuid(r["id"]).bytes),
    (
        "idempotency_records",
        "body",
        "idempotency-records",
        lambda r: f"{r['scope']}\x1f{r['key']}".encode(),
    ),
)


def without_key_id(token: str, secret: str) -> str:
    """The same access token as the version before key ids signed it: no ``kid``."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, derive_key(secret, "access-tokens"), algorithm="HS256")


@pytest.mark.timeout(480)  # three starts and the command thrice, on a loaded machine
async def test_a_deployment_from_before_key_ids_changes_secret_in_its_first_restart(
    database: str, push: PushServiceStandin
) -> None:
    """Values sealed without a key id, tokens without ``kid`` and a VAPID key that was
    derived, not stored, all work when the first start of this version already has a new
    secret; the VAPID key is the one the old version served."""
    sms = MemorySmsSender()
    async with serving(database, SECRET_A, sms=sms) as first:
        made = await make_everything(first, push, sms)
    await write_as_before_key_ids(database, SECRET_A)
    served_before = vapid_public_key_b64(vapid_key_from_secret(derive_key(SECRET_A, "vapid")))
    assert made.vapid_public_key == served_before
    old_token = without_key_id(made.staff["access_token"], SECRET_A)

    async with serving(database, SECRET_B, [SECRET_A], sms=sms) as second:
        api = second.api
        assert (await api.get("/v1/me", token=old_token)).status_code == 200
        verified = await api.post(
            "/v1/auth/codes/verify", json={"phone": made.phone, "code": made.code}
        )
        assert verified.status_code == 200, verified.text
        made.extra["resident"] = verified.json()
        await still_works(second, made, push)
        printed = await operator(operator_env(database, SECRET_B, [SECRET_A]), "secrets", "rotate")
        assert re.search(r"ledger key: 1/1 checked, 1 re-sealed", printed), printed

    assert "unreadable" not in await operator(operator_env(database, SECRET_B), "secrets", "rotate")
    async with serving(database, SECRET_B, sms=sms) as third:
        await still_works(third, made, push)


def test_every_sealed_column_is_rotated() -> None:
    """A new ``sealed_*`` column that `sesame secrets rotate` does not know would be lost
    when the previous secret is dropped."""
    sealed = {
        (table.name, column.name)
        for table in Base.metadata.tables.values()
        for column in table.columns
        if column.name.startswith("sealed_")
    }
    rotated_columns = {(t.model.__tablename__, c) for t in SEALED_TABLES for c in t.columns}
    assert sealed <= rotated_columns
