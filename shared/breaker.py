"""pybreaker's state machine, used so that the guarded I/O never runs inside its lock.

pybreaker 1.4.1 `CircuitBreaker.call()` holds a threading.RLock for the whole wrapped call, which lets
one request at a time reach an upstream, and it counts an un-awaited coroutine as a success
(docs/performance.md). Here the lock is held only for the microseconds it takes to ask "may I call?"
and to record the outcome; the awaited call itself runs unlocked, so calls overlap freely.
"""
from __future__ import annotations

import asyncio
import threading
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import AsyncIterator, Awaitable, Callable, TypeVar

import pybreaker
from pybreaker import STATE_CLOSED, STATE_OPEN, CircuitBreakerError

T = TypeVar("T")

__all__ = ["AsyncCircuitBreaker", "CircuitBreakerError"]


class AsyncCircuitBreaker:
    """Opens after `fail_max` consecutive failures; after `reset_timeout` s lets one trial call through."""

    def __init__(self, name: str, *, fail_max: int = 5, reset_timeout: float = 10.0,
                 on_state_change: Callable[[str, str], None] | None = None) -> None:
        self.name = name
        self._cb = pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=reset_timeout, name=name)
        self._lock = threading.Lock()
        self._trial_in_flight = False
        if on_state_change:
            self._cb.add_listener(_StateListener(on_state_change))

    @property
    def state(self) -> str:
        return self._cb.current_state

    @property
    def fail_counter(self) -> int:
        return self._cb.fail_counter

    @property
    def reset_timeout(self) -> float:
        return self._cb.reset_timeout

    def seconds_until_retry(self) -> float:
        opened_at = self._cb._state_storage.opened_at
        if self.state != STATE_OPEN or opened_at is None:
            return 0.0
        remaining = (opened_at + timedelta(seconds=self._cb.reset_timeout)) - datetime.now(UTC)
        return max(0.0, remaining.total_seconds())

    def before_call(self) -> None:
        """Raise CircuitBreakerError when the circuit refuses calls; otherwise admit this one."""
        with self._lock:
            state = self._cb.current_state
            if state == STATE_CLOSED:
                return
            if state == STATE_OPEN:
                if self.seconds_until_retry() > 0:
                    raise CircuitBreakerError(f"circuit {self.name!r} is open")
                self._cb.half_open()
                self._trial_in_flight = True
                return
            # half-open: exactly one trial call at a time decides whether to close again.
            if self._trial_in_flight:
                raise CircuitBreakerError(f"circuit {self.name!r} is half-open; a trial call is in flight")
            self._trial_in_flight = True

    def record_success(self) -> None:
        with self._lock:
            self._trial_in_flight = False
            self._cb.state._handle_success()

    def record_failure(self, exc: BaseException) -> None:
        with self._lock:
            self._trial_in_flight = False
            try:
                self._cb.state._handle_error(exc, reraise=False)
            except BaseException:  # pybreaker signals "just opened" by raising; the caller raises its own.
                pass

    def record_cancelled(self) -> None:
        """The caller gave up: free a half-open trial slot and record nothing about the upstream."""
        with self._lock:
            self._trial_in_flight = False

    async def call(self, func: Callable[..., Awaitable[T]], *args, **kwargs) -> T:
        """Await func(*args) under the breaker: any exception it raises counts as a failure."""
        async with self.guard():
            return await func(*args, **kwargs)

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        self.before_call()
        try:
            yield
        except asyncio.CancelledError:
            # The caller went away; that says nothing about the upstream's health.
            self.record_cancelled()
            raise
        except BaseException as exc:
            self.record_failure(exc)
            raise
        else:
            self.record_success()


class _StateListener(pybreaker.CircuitBreakerListener):
    def __init__(self, callback: Callable[[str, str], None]) -> None:
        self._callback = callback

    def state_change(self, cb, old_state, new_state) -> None:
        self._callback(old_state.name if old_state else STATE_CLOSED, new_state.name)

