"""The retry policy: webhooks follow the Standard Webhooks schedule then die; push and
e-mail back off exponentially within their budget; a provider's Retry-After wins. The
sending loop's pipeline: a bounded number of batches at once, and a channel's bound
shared by all of them."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from sesame.kit.ids import new_id
from sesame.notifications.channels.base import (
    InFlight,
    Message,
    Outcome,
    Result,
    send_bounded,
)
from sesame.notifications.sender import WEBHOOK_SCHEDULE, Sender, retry_delay
from sesame.runtime import Runtime


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
