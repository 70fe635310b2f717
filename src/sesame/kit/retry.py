"""Retries that cannot become a storm: capped exponential backoff with full jitter, and
token-bucket retry budgets.

Backoff spreads retries over time; a budget caps how many there are at all. A retry
spends a token; tokens come back slowly with time and with first attempts, so when
everything fails (an outage) retries dry up at a small fraction of normal traffic
instead of multiplying it (AWS "retry quota", Google SRE "retry budget").
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


def backoff_delay(
    attempt: int, *, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): uniform in
    ``[0, min(cap, base * 2**attempt)]`` (full jitter)."""
    return rand() * min(cap, base * float(2 ** min(attempt, 32)))


class TokenBucket:
    def __init__(
        self,
        capacity: float,
        refill_per_second: float,
        *,
        deposit_per_request: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.refill_per_second = refill_per_second
        self.deposit_per_request = deposit_per_request
        self._clock = clock
        self._tokens = capacity
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(
            self.capacity, self._tokens + (now - self._updated) * self.refill_per_second
        )
        self._updated = now

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def record_request(self) -> None:
        """A first attempt: it earns the budget a fraction of a retry."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens + self.deposit_per_request)

    def try_spend(self, amount: float = 1.0) -> bool:
        self._refill()
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False


class RetryBudget:
    """A budget per key (a device) inside a shared one (the whole process)."""

    def __init__(
        self,
        *,
        per_key_capacity: float = 3.0,
        per_key_refill_per_second: float = 0.05,
        overall_capacity: float = 50.0,
        overall_refill_per_second: float = 1.0,
        deposit_per_request: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_key: dict[object, TokenBucket] = {}
        self._per_key_args = (per_key_capacity, per_key_refill_per_second, deposit_per_request)
        self._clock = clock
        self.overall = TokenBucket(
            overall_capacity,
            overall_refill_per_second,
            deposit_per_request=deposit_per_request,
            clock=clock,
        )
        self.refused = 0

    def _bucket(self, key: object) -> TokenBucket:
        bucket = self._per_key.get(key)
        if bucket is None:
            capacity, refill, deposit = self._per_key_args
            bucket = TokenBucket(capacity, refill, deposit_per_request=deposit, clock=self._clock)
            if len(self._per_key) > 100_000:
                self._per_key.clear()
            self._per_key[key] = bucket
        return bucket

    def record_request(self, key: object) -> None:
        self._bucket(key).record_request()
        self.overall.record_request()

    def try_retry(self, key: object) -> bool:
        """Spend a retry if both the key's budget and the overall one allow it."""
        bucket = self._bucket(key)
        if bucket.tokens >= 1 and self.overall.tokens >= 1:
            bucket.try_spend()
            self.overall.try_spend()
            return True
        self.refused += 1
        return False
