"""The project's one circuit breaker: a failure rate over a minimum volume, with a few half-open probes.

Used by every client to another service (shared.http) and by each service for its own database (shared.db).
What counts as a failure is decided by the caller *before* the breaker is told (shared.http: connection
errors, timeouts, 502/503/504 that do not name a dependency; shared.db: cannot connect, connection lost), so
nothing a single client can provoke with its own requests — a 4xx, a 500 from a bug — ever opens it.

The rule (README, "Circuit breakers", argues it against Envoy's and resilience4j's defaults):
- closed -> open when, over the last `window` seconds, at least `min_calls` calls finished and at least
  `failure_rate` of them failed. A rate, not a run of consecutive failures: at 400 req/s to one upstream
  "5 in a row" is a 12 ms hiccup (say five pooled connections reset together by a restart), and opening
  on it would refuse some 4,000 requests for the next 10 s.
- open -> half-open after `reset_timeout` seconds; half-open admits `probes` calls at a time, closes after
  `probes` successes, and opens again (for another `reset_timeout`) on any probe's failure.

Why not pybreaker, which the project started with: its `call()` holds a threading.RLock for the whole
wrapped call, so an awaited call serialises every caller (tests/shared/test_breaker.py's trap tests keep
that measured), it counts consecutive failures only, and admission and outcome cannot be separated
through its public API — the earlier adapter reached into its private state to do that.
"""
from __future__ import annotations

import asyncio
import threading
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker", "CircuitOpen"]


class CircuitOpen(Exception):
    """The breaker refused the call without trying it; `retry_after` is when it will next let one through."""

    def __init__(self, name: str, state: str, retry_after: float) -> None:
        super().__init__(f"circuit {name!r} is {state}")
        self.retry_after = retry_after


class CircuitBreaker:
    """Admission (`before_call`) and outcome (`record_success` / `record_failure` / `record_cancelled`) are
    separate calls, each a few microseconds under a lock, so the guarded I/O itself runs unlocked and
    overlaps freely. `guard()` wraps them for code that counts every exception as a failure."""

    def __init__(self, name: str, *, window: float = 10.0, min_calls: int = 20, failure_rate: float = 0.5,
                 reset_timeout: float = 10.0, probes: int = 3,
                 on_state_change: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < failure_rate <= 1:
            raise ValueError("failure_rate must be in (0, 1]")
        self.name = name
        self.min_calls, self.failure_rate = max(1, min_calls), failure_rate
        self.reset_timeout, self.probes = reset_timeout, max(1, probes)
        self._on_state_change = on_state_change
        self._clock = clock
        self._lock = threading.Lock()
        # The window as one-second buckets: [calls, failures] per second, oldest dropped as time moves on.
        self._buckets = max(1, round(window))
        self._calls = [0] * self._buckets
        self._failures = [0] * self._buckets
        self._bucket_second = int(clock())
        self._state = CLOSED
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0

    @property
    def state(self) -> str:
        """closed, open or half-open; an open breaker whose timeout has passed reads as half-open."""
        if self._state == OPEN and self.seconds_until_retry() == 0:
            return HALF_OPEN
        return self._state

    def seconds_until_retry(self) -> float:
        if self._state != OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout - self._clock())

    def window_counts(self) -> tuple[int, int]:
        """(calls, failures) recorded over the current window."""
        with self._lock:
            self._roll()
            return sum(self._calls), sum(self._failures)

    def before_call(self) -> None:
        """Admit this call, or raise CircuitOpen at once."""
        with self._lock:
            if self._state == CLOSED:
                return
            if self._state == OPEN:
                remaining = self._opened_at + self.reset_timeout - self._clock()
                if remaining > 0:
                    raise CircuitOpen(self.name, OPEN, remaining)
                self._transition(HALF_OPEN)
            if self._probes_in_flight + self._probe_successes >= self.probes:
                raise CircuitOpen(self.name, HALF_OPEN, 1.0)
            self._probes_in_flight += 1

    def record_success(self) -> None:
        with self._lock:
            if self._state == HALF_OPEN:
                self._probes_in_flight = max(0, self._probes_in_flight - 1)
                self._probe_successes += 1
                if self._probe_successes >= self.probes:
                    self._transition(CLOSED)
                return
            self._count(failed=False)

    def record_failure(self) -> None:
        with self._lock:
            if self._state == HALF_OPEN:
                self._transition(OPEN)
                return
            if self._state == OPEN:  # a call admitted before the breaker opened, finishing late
                return
            self._count(failed=True)
            calls, failures = sum(self._calls), sum(self._failures)
            if calls >= self.min_calls and failures >= self.failure_rate * calls:
                self._transition(OPEN)

    def record_cancelled(self) -> None:
        """The caller gave up: free a probe slot and say nothing about the upstream's health."""
        with self._lock:
            if self._state == HALF_OPEN:
                self._probes_in_flight = max(0, self._probes_in_flight - 1)

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Admit, run the block, record: any exception from the block is a failure (cancellation is not)."""
        self.before_call()
        try:
            yield
        except asyncio.CancelledError:
            self.record_cancelled()
            raise
        except Exception:
            self.record_failure()
            raise
        else:
            self.record_success()

    # -- internals: called with the lock held ----------------------------------------------------------

    def _roll(self) -> None:
        now = int(self._clock())
        elapsed = now - self._bucket_second
        if elapsed <= 0:
            return
        for step in range(1, min(elapsed, self._buckets) + 1):
            index = (self._bucket_second + step) % self._buckets
            self._calls[index] = self._failures[index] = 0
        self._bucket_second = now

    def _count(self, *, failed: bool) -> None:
        self._roll()
        index = self._bucket_second % self._buckets
        self._calls[index] += 1
        if failed:
            self._failures[index] += 1

    def _transition(self, new: str) -> None:
        old, self._state = self._state, new
        self._probes_in_flight = self._probe_successes = 0
        if new == OPEN:
            self._opened_at = self._clock()
        if new in (OPEN, CLOSED):  # a fresh window: what happened before the outage says nothing now
            self._calls = [0] * self._buckets
            self._failures = [0] * self._buckets
        if self._on_state_change and old != new:
            self._on_state_change(old, new)
