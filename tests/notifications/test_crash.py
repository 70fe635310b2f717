"""A ``sesame worker`` killed in the middle of sending loses nothing: after a restart
every delivery is sent, and what was sent twice carries the same id, for the receiver to
drop. The alerts raise once and resolve once."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import func, select

from sesame.app import create_app
from sesame.auth.sms import MemorySmsSender
from sesame.kit.db import write_intent
from sesame.models import Alert, Delivery, OutboxMessage
from sesame.notifications import alerts
from sesame.notifications.repository import NotificationRepository
from sesame.notifications.router import route_batch
from sesame.notifications.testing.webhooks import WebhookReceiver, signature_matches
from sesame.notifications.triggers import delivery_row
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime, build_runtime
from tests.conftest import test_settings
from tests.jobs.test_worker_processes import start_worker
from tests.support import ShiftableClock, platform_admin_token, served_world

DELIVERIES = 200


async def statuses(runtime: Runtime) -> dict[str, int]:
    """The webhook deliveries' (the world's residents also get their invitation texts)."""
    async with runtime.read_session_factory() as session:
        return await NotificationRepository(session).counts_by_status(channel="webhook")


@pytest.mark.timeout(240)
async def test_a_worker_killed_mid_send_loses_nothing_and_resends_the_same_ids(
    postgres_database: str, tmp_path: Path
) -> None:
    runtime = build_runtime(
        test_settings(postgres_database, worker_enabled=False, ledger_enabled=False),
        sms_sender=MemorySmsSender(),
    )
    receiver = WebhookReceiver([], delay_seconds=0.2)  # slow: the kill lands mid-batch
    await receiver.start()
    try:
        async with served_world(runtime, "10.9.2.1") as (api, world):
            endpoint = await api.create(
                "/v1/webhook-endpoints",
                world.tokens["partner_admin"],
                {"url": receiver.url("/crash"), "event_types": ["test.event"]},
            )
        receiver.reset([endpoint["secret"]], delay_seconds=0.2)
        now = runtime.clock.now()
        ids = [f"crash-{n:04d}" for n in range(DELIVERIES)]
        with write_intent():
            async with runtime.session_factory() as session:
                await NotificationRepository(session).add_deliveries(
                    [
                        delivery_row(
                            transaction_id=tx,
                            partner_id=UUID(world.partner_id),
                            event_type="test.event",
                            category="webhooks",
                            channel="webhook",
                            webhook_endpoint_id=UUID(endpoint["id"]),
                            locale="ko",
                            title="test.event",
                            body="",
                            data={"n": n},
                            now=now,
                        )
                        for n, tx in enumerate(ids)
                    ]
                )
                await session.commit()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SESAME_")},
            "SESAME_ENV": "development",
            "SESAME_DATABASE_URL": postgres_database,
            "SESAME_SECRET_KEY": runtime.settings.secret_key.get_secret_value(),
            "SESAME_GATEWAY_ENABLED": "false",
            "SESAME_LEDGER_ENABLED": "false",
            "SESAME_LOG_LEVEL": "warning",
            "SESAME_NOTIFY_LEASE_SECONDS": "3",
            "SESAME_NOTIFY_BATCH_SIZE": "50",
        }
        first = start_worker(env, tmp_path)
        try:
            for _ in range(600):
                if len(receiver.events) >= 20:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the first worker sent nothing")
        finally:
            first.send_signal(signal.SIGKILL)  # no clean shutdown: leases are left held
            await asyncio.to_thread(first.wait, 20)
        before = await statuses(runtime)
        assert before.get("queued", 0) > 0  # it died with work claimed or waiting
        second = start_worker(env, tmp_path)
        try:
            for _ in range(1200):
                now_counts = await statuses(runtime)
                if now_counts.get("sent", 0) == DELIVERIES:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"not all sent: {now_counts}")
        finally:
            second.terminate()
            await asyncio.to_thread(second.wait, 20)
    finally:
        await receiver.stop()
        await runtime.close()
    received = {event.msg_id for event in receiver.events}
    assert received == set(ids)  # every one arrived: nothing lost
    assert len(receiver.events) == DELIVERIES  # the receiver kept each once ...
    # ... and recognised each resend by its id; requests cut off by the kill make the rest.
    assert receiver.attempts >= DELIVERIES + receiver.duplicates
    assert all(
        signature_matches(endpoint["secret"], e.headers, e.raw_body) for e in receiver.events
    )


async def test_alerts_are_raised_once_reach_platform_administrators_and_resolve(
    postgres_database: str,
) -> None:
    clock = ShiftableClock()
    runtime = build_runtime(
        test_settings(postgres_database, ledger_enabled=False, alert_relay_lag_seconds=60),
        clock=clock,
        sms_sender=MemorySmsSender(),
    )
    try:
        app = create_app(runtime=runtime)
        async with app.router.lifespan_context(app):
            await platform_admin_token(app, runtime)  # someone to tell
            with write_intent():
                async with runtime.session_factory() as session:
                    await outbox.append(
                        session,
                        [outbox.message("test.event", partner_id=None, aggregate_id=None)],
                    )
                    await session.commit()
            clock.advance(timedelta(minutes=5))  # nobody routed it: the relay lags
            raised = await asyncio.gather(alerts.check(runtime), alerts.check(runtime))
            assert sorted(name for names in raised for name in names) == [
                "relay_lag"
            ]  # two checks, one alert
            while await route_batch(runtime) > 0:
                pass
            async with runtime.read_session_factory() as session:
                firing = (await session.execute(select(Alert))).scalars().all()
                emails = (
                    (
                        await session.execute(
                            select(Delivery).where(Delivery.event_type == "ops.alert")
                        )
                    )
                    .scalars()
                    .all()
                )
            assert [(a.name, a.resolved_at) for a in firing] == [("relay_lag", None)]
            assert {d.channel for d in emails} == {"email"}  # the admin's account address
            assert all(d.staff_id is not None and "relay" in d.body for d in emails)
            assert await alerts.check(runtime) == ["relay_lag"]  # routed now: resolved
            async with runtime.read_session_factory() as session:
                resolved = (await session.execute(select(Alert))).scalars().all()
                events = (
                    await session.execute(
                        select(func.count())
                        .select_from(OutboxMessage)
                        .where(OutboxMessage.topic == "ops.alert")
                    )
                ).scalar()
            assert resolved[0].resolved_at is not None
            assert resolved[0].firing_key is None
            assert events == 2  # raised, resolved
    finally:
        await runtime.close()
