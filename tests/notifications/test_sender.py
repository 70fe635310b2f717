"""The retry policy: webhooks follow the Standard Webhooks schedule then die; push and
e-mail back off exponentially within their budget; a provider's Retry-After wins. The
sending loop's pipeline: a bounded number of batches at once, and a channel's bound
shared by all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import select

from sesame.auth.sms import MemorySmsSender
from sesame.kit.db import write_intent
from sesame.kit.ids import new_id
from sesame.models import (
    Delivery,
    DeliveryStatus,
    Destination,
    DestinationKind,
    Person,
    PersonKind,
)
from sesame.notifications.channels.base import (
    InFlight,
    Message,
    Outcome,
    Result,
    send_bounded,
)
from sesame.notifications.repository import NotificationRepository
from sesame.notifications.sender import WEBHOOK_SCHEDULE, Sender, retry_delay
from sesame.notifications.service import digest
from sesame.notifications.triggers import delivery_row
from sesame.runtime import Runtime, build_runtime
from tests.conftest import test_settings
from tests.support import served_world


def test_webhooks_follow_the_schedule_then_give_up() -> None:
    for attempt, planned in enumerate(WEBHOOK_SCHEDULE, start=1):
        delay = retry_delay("webhook", attempt, max_attempts=6, retry_after=None)
        assert delay == pytest.approx(planned, rel=0.1)
    assert retry_delay("webhook", len(WEBHOOK_SCHEDULE) + 1, 6, None) is None
    assert [round(s) for s in WEBHOOK_SCHEDULE] == [5, 300, 1800, 7200, 18000, 36000]


def test_push_backs_off_within_its_budget_and_honours_retry_after() -> None:
    delays = [retry_delay("fcm", attempt, 6, None) for attempt in range(1, 6)]
    assert all(d is not None and 1.0 <= d <= 3601.0 for d in delays)
    assert retry_delay("fcm", 6, 6, None) is None  # the sixth failure is the last
    slow = retry_delay("email", 1, 6, retry_after=120.0)
    assert slow is not None
    assert slow >= 120.0


async def test_a_drain_keeps_its_batches_in_flight_and_stops_claiming_after_a_failure(
    runtime: Runtime,
) -> None:
    """Up to the setting's number of batches go at once, never more; every claimed batch
    is finished; after one fails nothing more is claimed, and its error is raised once
    the others are done."""
    sender = Sender(runtime, {})
    limit = runtime.settings.notify_batches_in_flight
    claimed: list[int] = []
    finished: list[int] = []
    running = 0
    most = 0
    release = asyncio.Event()

    async def claim(_limit: int | None = None) -> Any:
        if len(claimed) == 10:
            return None
        claimed.append(len(claimed))
        return SimpleNamespace(rows=[object()] * 5, number=claimed[-1])

    async def finish(batch: Any) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if running == limit:
            release.set()
        await release.wait()
        running -= 1
        if batch.number == 4:
            raise RuntimeError("the database went away")
        finished.append(batch.number)

    sender._claim = claim  # type: ignore[method-assign]
    sender._finish = finish  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="went away"):
        await sender.drain()
    assert most == limit > 1  # several at once, never more than allowed
    assert 4 not in finished
    assert sorted([*finished, 4]) == claimed  # each claimed batch finished or failed
    assert len(claimed) < 10  # the failure stopped the claiming


async def test_batches_sharing_a_bound_never_exceed_it_together() -> None:
    """Two batches sent at once through one channel bound: at most its limit in flight."""
    in_flight = InFlight(4)
    running = 0
    most = 0

    async def send_one(message: Message) -> Result:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        running -= 1
        return Result(Outcome.SENT)

    messages = [
        Message(
            delivery_id=new_id(),
            transaction_id=f"t{n}",
            address="a",
            title="t",
            body="b",
            category="c",
            locale="ko",
            event_type="e",
        )
        for n in range(40)
    ]
    done = await asyncio.gather(
        send_bounded(messages[:20], 8, send_one, in_flight),
        send_bounded(messages[20:], 8, send_one, in_flight),
    )
    assert [len(results) for results in done] == [20, 20]
    assert most == 4


class _FailsOne:
    """A push channel that refuses, for now, the message whose transaction id it is
    told, and accepts the others."""

    name = "fcm"

    def __init__(self, failing: str) -> None:
        self.failing = failing
        self.batches: list[list[str]] = []

    async def send_many(self, messages: Sequence[Message]) -> list[Result]:
        self.batches.append([m.transaction_id for m in messages])
        return [
            Result(Outcome.RETRY, "UNAVAILABLE", "FCM answered 503")
            if m.transaction_id == self.failing
            else Result(Outcome.SENT, provider_id=f"p-{m.transaction_id}")
            for m in messages
        ]

    async def aclose(self) -> None:
        return None


async def test_a_failed_delivery_of_a_batch_is_retried_later_and_the_others_are_sent(
    own_database_url: str,
) -> None:
    """One claim takes the batch, one channel call sends it, one statement records it: the
    refused delivery waits for its backoff, the others are sent; nothing is claimed twice."""
    runtime = build_runtime(
        test_settings(own_database_url, ledger_enabled=False), sms_sender=MemorySmsSender()
    )
    try:
        async with served_world(runtime, "10.9.3.1") as (_, world):
            partner_id, site_id = UUID(world.partner_id), UUID(world.site_id)
        now = runtime.clock.now()
        person_id, destination_id = new_id(), new_id()
        ids = [f"batch-{n}" for n in range(5)]
        with write_intent():
            async with runtime.session_factory() as session:
                session.add(
                    Person(
                        id=person_id,
                        partner_id=partner_id,
                        site_id=site_id,
                        phone="+821000000001",
                        name="주민",
                        locale="ko-KR",
                        kind=PersonKind.RESIDENT,
                    )
                )
                await session.flush()
                session.add(
                    Destination(
                        id=destination_id,
                        partner_id=partner_id,
                        person_id=person_id,
                        kind=DestinationKind.FCM,
                        address="token-1",
                        address_digest=digest("token-1"),
                        install_id="install-1",
                        keys={},
                        active=True,
                    )
                )
                await session.flush()
                await NotificationRepository(session).add_deliveries(
                    [
                        delivery_row(
                            transaction_id=tx,
                            partner_id=partner_id,
                            site_id=site_id,
                            person_id=person_id,
                            destination_id=destination_id,
                            event_type="campaign",
                            category="announcements",
                            channel="fcm",
                            locale="ko",
                            title="t",
                            body="b",
                            data={},
                            now=now,
                        )
                        for tx in ids
                    ]
                )
                await session.commit()
        channel = _FailsOne(ids[2])
        sender = Sender(runtime, {"fcm": channel})
        assert await sender.send_batch() == 5
        assert await sender.send_batch() == 0  # the retry is not due yet
        assert [sorted(batch) for batch in channel.batches] == [ids]
        async with runtime.read_session_factory() as session:
            rows = {
                d.transaction_id: d
                for d in (
                    await session.execute(select(Delivery).where(Delivery.transaction_id.in_(ids)))
                ).scalars()
            }
        assert {tx: rows[tx].status for tx in ids} == {
            tx: DeliveryStatus.QUEUED if tx == ids[2] else DeliveryStatus.SENT for tx in ids
        }
        failed = rows[ids[2]]
        assert failed.attempts == 1
        assert failed.error_code == "UNAVAILABLE"
        assert failed.leased_until is None
        assert failed.next_attempt_at > now + timedelta(seconds=1)  # backed off
        assert all(rows[tx].provider_id == f"p-{tx}" for tx in ids if tx != ids[2])
    finally:
        await runtime.close()
