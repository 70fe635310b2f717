"""Push fan-out: one campaign to 100,000 residents through the FCM stand-in — deliveries
per second and peak memory — and, in the same run, the floor: the same HTTP clients
posting the same messages to the same stand-in with no Sesame in between.

Sesame runs as ``sesame serve`` would (one process: the campaign job queues deliveries a
page at a time, the router, two senders with the FCM channel at its default concurrency)
on PostgreSQL; the stand-in runs in a process of its own, checks every request's bearer
and message shape, and keeps nothing. The rate is from the campaign's creation to its
last delivery recorded ``sent``. Memory is this process's resident set, sampled during
the send, for a 10,000-resident campaign first and then the full one: it should not
grow with the audience.

Last line: one JSON object with ``deliveries_per_s``, ``floor_per_s``, ``share_of_floor``,
``peak_rss_mb``, ``peak_rss_mb_small``, ``recipients``.

Usage: ``python bench/push_fanout.py [--recipients 100000]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import httpx
import orjson
import uvloop
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import _create_pg_database, _drop_pg_database, record, rss_mb, run, step
from sesame.app import create_app
from sesame.demo import PLATFORM
from sesame.kit.db import write_intent
from sesame.kit.ids import new_id
from sesame.kit.logging import configure_logging
from sesame.migrations import upgrade
from sesame.models import (
    Building,
    CampaignStatus,
    Destination,
    DestinationKind,
    Household,
    HouseholdRole,
    Partner,
    PartnerKind,
    Person,
    PersonKind,
    Site,
    SiteKind,
    Unit,
)
from sesame.notifications.channels.base import Message
from sesame.notifications.channels.fcm import ServiceAccountTokens, fcm_message, messages_session
from sesame.notifications.repository import NotificationRepository
from sesame.notifications.schemas import CampaignCreate
from sesame.notifications.service import CampaignService, digest
from sesame.notifications.testing.fcm import run_in_process
from sesame.runtime import build_runtime
from sesame.settings import Settings

SECRET = "bench-secret-key-with-at-least-32-characters!"
RESIDENTS_PER_UNIT = 100
CHUNK = 5000
CONCURRENCY = 64  # the FCM channel's default


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def floor(url: str, service_account: dict[str, Any], count: int) -> float:
    """The channel's HTTP client (same session settings, same number of workers), posting
    one prepared request over and over: the rate with no Sesame in between."""
    session = messages_session(CONCURRENCY, aiohttp.ClientTimeout(total=10))
    async with httpx.AsyncClient(timeout=10.0) as token_client:
        token = await ServiceAccountTokens(service_account, token_client).access_token()
    target = f"{url}/v1/projects/{service_account['project_id']}/messages:send"
    body = orjson.dumps(
        {
            "message": fcm_message(
                Message(
                    delivery_id=new_id(),
                    transaction_id="c0-" + "0" * 32,
                    address="floor-token-" + "x" * 140,
                    title="단수 안내",
                    body="내일 10시부터 단수됩니다.",
                    category="announcements",
                    locale="ko",
                    event_type="campaign",
                    data={"campaign_id": str(new_id())},
                )
            )
        }
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    left = iter(range(count))

    async def worker() -> None:
        for _ in left:
            async with session.post(target, data=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                await response.read()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    await session.close()
    return count / elapsed


async def seed(runtime: Any, residents: int) -> tuple[UUID, UUID]:
    """A partner, a site, enough units, and ``residents`` people each with a household
    and an app install's FCM token; bulk inserts, outside what is measured."""
    partner_id, site_id, building_id = new_id(), new_id(), new_id()
    units = [new_id() for _ in range(-(-residents // RESIDENTS_PER_UNIT))]
    with write_intent():
        async with runtime.session_factory() as session:
            session.add(Partner(id=partner_id, name="Bench", kind=PartnerKind.PROPERTY_MANAGER))
            await session.flush()
            session.add(
                Site(
                    id=site_id,
                    partner_id=partner_id,
                    name="Bench Heights",
                    kind=SiteKind.APARTMENT_COMPLEX,
                    time_zone="Asia/Seoul",
                )
            )
            await session.flush()
            session.add(
                Building(id=building_id, partner_id=partner_id, site_id=site_id, name="101동")
            )
            await session.flush()
            session.add_all(
                Unit(
                    id=unit_id,
                    partner_id=partner_id,
                    site_id=site_id,
                    building_id=building_id,
                    name=f"{n + 1}호",
                    floor=1 + n // 10,
                )
                for n, unit_id in enumerate(units)
            )
            await session.commit()
    for start in range(0, residents, CHUNK):
        people, homes, tokens = [], [], []
        for n in range(start, min(start + CHUNK, residents)):
            person_id = new_id()
            token = f"bench-{n:07d}-" + "x" * 140
            people.append(
                {
                    "id": person_id,
                    "partner_id": partner_id,
                    "site_id": site_id,
                    "phone": f"+8210{n:08d}",
                    "name": f"주민 {n}",
                    "locale": "ko-KR" if n % 4 else "en-US",
                    "kind": PersonKind.RESIDENT,
                }
            )
            homes.append(
                {
                    "id": new_id(),
                    "partner_id": partner_id,
                    "site_id": site_id,
                    "unit_id": units[n // RESIDENTS_PER_UNIT],
                    "person_id": person_id,
                    "role": HouseholdRole.MEMBER,
                }
            )
            tokens.append(
                {
                    "id": new_id(),
                    "partner_id": partner_id,
                    "person_id": person_id,
                    "kind": DestinationKind.FCM,
                    "address": token,
                    "address_digest": digest(token),
                    "install_id": f"install-{n}",
                    "keys": {},
                    "active": True,
                }
            )
        with write_intent():
            async with runtime.session_factory() as session:
                for model, rows in ((Person, people), (Household, homes), (Destination, tokens)):
                    await session.execute(insert(model), rows)
                await session.commit()
    return partner_id, site_id


async def campaign(runtime: Any, site_id: UUID, building: UUID | None = None) -> dict[str, float]:
    content = {
        "ko": {"title": "단수 안내", "body": "내일 10시부터 단수됩니다."},
        "en": {"title": "Water outage", "body": "No water tomorrow from 10:00."},
    }
    peak = rss_mb(os.getpid())
    started, cpu_started = time.perf_counter(), time.process_time()
    with write_intent():
        async with runtime.session_factory() as session:
            created = await CampaignService(session, PLATFORM, runtime).create(
                CampaignCreate.model_validate(
                    {"site_id": site_id, "building_id": building, "content": content}
                )
            )
            await session.commit()
    last_report = started
    while True:
        await asyncio.sleep(0.25)
        peak = max(peak, rss_mb(os.getpid()))
        async with runtime.read_session_factory() as session:
            counts = await NotificationRepository(session).counts_by_status(campaign_id=created.id)
            state = await session.get(type(created), created.id)
        if time.perf_counter() - last_report > 5:
            log(f"  … {counts} ({state.status if state else '?'})")
            last_report = time.perf_counter()
        if (
            state is not None
            and state.status is CampaignStatus.QUEUED
            and set(counts)
            <= {
                "sent",
                "failed",
                "dead",
            }
        ):
            break
    elapsed = time.perf_counter() - started
    sent = counts.get("sent", 0)
    return {
        "sent": sent,
        "seconds": elapsed,
        "per_s": sent / elapsed,
        "peak_rss_mb": peak,
        "cpu_share": (time.process_time() - cpu_started) / elapsed,  # of one core
    }


async def sesame_run(url: str, service_account: dict[str, Any], residents: int) -> dict[str, Any]:
    database = await _create_pg_database()
    try:
        await asyncio.to_thread(upgrade, database)
        settings = Settings(
            env="development",
            database_url=database,
            secret_key=SECRET,
            log_level="warning",
            gateway_enabled=False,
            ledger_enabled=False,
            notify_fcm_service_account=json.dumps(service_account),
            notify_fcm_endpoint=url,
            notify_senders=int(os.environ.get("BENCH_SENDERS", "2")),
            notify_batch_size=int(os.environ.get("BENCH_BATCH", "500")),
        )
        runtime = build_runtime(settings)
        app = create_app(runtime=runtime)
        async with app.router.lifespan_context(app):
            small = min(10_000, residents // 10) or residents
            log(f"seeding {small:,} + {residents:,} residents …")
            step("seeding")
            _, small_site = await seed(runtime, small)
            _, site = await seed(runtime, residents)
            log(f"campaign to {small:,} …")
            step(f"campaign to {small:,}")
            first = await campaign(runtime, small_site)
            log(f"  {first['per_s']:,.0f} deliveries/s, peak RSS {first['peak_rss_mb']:.0f} MB")
            record().update(
                small_recipients=small, peak_rss_mb_small=round(first["peak_rss_mb"], 1)
            )
            log(f"campaign to {residents:,} …")
            step(f"campaign to {residents:,}")
            full = await campaign(runtime, site)
            log(f"  {full['per_s']:,.0f} deliveries/s, peak RSS {full['peak_rss_mb']:.0f} MB")
        await runtime.close()
        return {"small": first, "small_recipients": small, "full": full}
    finally:
        await _drop_pg_database(database)


async def main(residents: int) -> None:
    configure_logging("warning", "console")
    with run_in_process(keep_messages=False) as standin:
        log(f"FCM stand-in at {standin.url}")
        result = await sesame_run(standin.url, standin.service_account, residents)
        record().update(recipients=residents, deliveries_per_s=round(result["full"]["per_s"], 1))
        stats = standin.stats()
        log(f"floor: {residents:,} posts with the same clients …")
        step("floor")
        floor_rate = await floor(standin.url, standin.service_account, residents)
        log(f"  {floor_rate:,.0f} posts/s")
    full = result["full"]
    assert full["sent"] == residents, full
    summary = {
        "recipients": residents,
        "deliveries_per_s": round(full["per_s"], 1),
        "floor_per_s": round(floor_rate, 1),
        "share_of_floor": round(full["per_s"] / floor_rate, 3),
        "seconds": round(full["seconds"], 2),
        "peak_rss_mb": round(full["peak_rss_mb"], 1),
        "peak_rss_mb_small": round(result["small"]["peak_rss_mb"], 1),
        "sesame_cpu_share": round(full["cpu_share"], 2),
        "small_recipients": result["small_recipients"],
        "standin_accepted": stats.get("counts", {}).get("accepted"),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    arguments = parser.parse_args()
    # The loop ``sesame serve`` runs on (uvicorn picks uvloop when it is installed), for
    # Sesame and for the floor alike.
    run(lambda: uvloop.run(main(arguments.recipients)))
