"""Backoff spreads retries; budgets cap them, so an outage never becomes a retry storm."""

from __future__ import annotations

import random

from sesame.kit.retry import RetryBudget, TokenBucket, backoff_delay


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_backoff_is_capped_and_fully_jittered() -> None:
    rng = random.Random(7)
    delays = [
        backoff_delay(n, base=0.5, cap=8.0, rand=rng.random) for n in range(12) for _ in range(200)
    ]
    assert max(delays) <= 8.0
    assert min(delays) >= 0.0
    late = [backoff_delay(10, base=0.5, cap=8.0, rand=rng.random) for _ in range(500)]
    # Full jitter: spread over the whole [0, cap] range, not clustered at the cap.
    assert min(late) < 1.0
    assert max(late) > 7.0
    assert backoff_delay(0, base=0.5, cap=8.0, rand=lambda: 1.0) == 0.5
    assert backoff_delay(3, base=0.5, cap=8.0, rand=lambda: 1.0) == 4.0


def test_token_bucket_refills_with_time_and_requests() -> None:
    clock = FakeTime()
    bucket = TokenBucket(2, refill_per_second=0.5, deposit_per_request=0.25, clock=clock)
    assert bucket.try_spend()
    assert bucket.try_spend()
    assert not bucket.try_spend()
    clock.now += 2.0
    assert bucket.try_spend()
    for _ in range(4):
        bucket.record_request()
    assert bucket.try_spend()
    assert not bucket.try_spend()


def test_retries_stop_when_everything_fails() -> None:
    """During an outage, retries stay a small fraction of first attempts."""
    clock = FakeTime()
    budget = RetryBudget(
        per_key_capacity=3,
        per_key_refill_per_second=0.0,
        overall_capacity=20,
        overall_refill_per_second=0.0,
        deposit_per_request=0.1,
        clock=clock,
    )
    first_attempts = 0
    retries = 0
    for request in range(1000):
        device = request % 100
        budget.record_request(device)
        first_attempts += 1
        while budget.try_retry(device):  # every attempt fails: retry while allowed
            retries += 1
    assert retries <= 20 + 0.1 * first_attempts + 1
    assert budget.refused > 0


def test_one_noisy_device_cannot_spend_the_whole_budget() -> None:
    clock = FakeTime()
    budget = RetryBudget(
        per_key_capacity=3,
        per_key_refill_per_second=0.0,
        overall_capacity=50,
        overall_refill_per_second=0.0,
        deposit_per_request=0.0,
        clock=clock,
    )
    noisy = sum(budget.try_retry("noisy") for _ in range(100))
    assert noisy == 3
    assert budget.try_retry("quiet")
