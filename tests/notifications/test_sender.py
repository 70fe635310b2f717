"""The retry policy: webhooks follow the Standard Webhooks schedule then die; push and
e-mail back off exponentially within their budget; a provider's Retry-After wins."""

from __future__ import annotations

import pytest

from sesame.notifications.sender import WEBHOOK_SCHEDULE, retry_delay


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
