"""The one breaker (shared.breaker): a failure rate over a minimum volume, probes in half-open, I/O unlocked.

Time is a fake clock here, so every transition is exact and nothing sleeps except the overlap checks.
"""
from __future__ import annotations

import asyncio
import threading
import time

import pybreaker
import pytest

from shared.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen

SLOW = 0.3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock | None = None, **options) -> CircuitBreaker:
    options = {"window": 10, "min_calls": 4, "failure_rate": 0.5, "reset_timeout": 5, "probes": 2, **options}
    return CircuitBreaker("test", clock=clock or Clock(), **options)


def calls(cb: CircuitBreaker, *, ok: int = 0, failed: int = 0) -> None:
    for _ in range(ok):
        cb.before_call()
        cb.record_success()
    for _ in range(failed):
        cb.before_call()
        cb.record_failure()


def test_failures_below_the_minimum_volume_never_open_it():
    cb = breaker()
    calls(cb, failed=3)
    assert cb.state == CLOSED and cb.window_counts() == (3, 3)


def test_it_opens_when_the_failure_rate_over_the_volume_reaches_the_threshold():
    cb = breaker()
    calls(cb, ok=3, failed=2)  # 2 of 5 failed: 40%
    assert cb.state == CLOSED
    calls(cb, failed=1)  # 3 of 6: 50%
    assert cb.state == OPEN
    with pytest.raises(CircuitOpen) as refused:
        cb.before_call()
    assert refused.value.retry_after == pytest.approx(5)


def test_a_run_of_failures_among_many_successes_does_not_open_it():
    # Five failures in a row: a consecutive-failures breaker (pybreaker's model) would open here.
    cb = breaker(min_calls=20)
    calls(cb, ok=95, failed=5)
    assert cb.state == CLOSED


def test_old_calls_leave_the_window():
    clock = Clock()
    cb = breaker(clock)
    calls(cb, failed=3)
    clock.now += 10  # the failures are a whole window old
    calls(cb, ok=1, failed=1)
    assert cb.window_counts() == (2, 1) and cb.state == CLOSED


def test_half_open_admits_the_probe_count_and_their_successes_close_it():
    clock = Clock()
    cb = breaker(clock)
    calls(cb, failed=4)
    assert cb.state == OPEN
    clock.now += 4.9
    with pytest.raises(CircuitOpen):
        cb.before_call()
    clock.now += 0.2
    assert cb.state == HALF_OPEN
    cb.before_call()
    cb.before_call()
    with pytest.raises(CircuitOpen):  # a third caller while both probes are in flight
        cb.before_call()
    cb.record_success()
    assert cb.state == HALF_OPEN
    with pytest.raises(CircuitOpen):  # one probe succeeded, one is still out: two is the whole budget
        cb.before_call()
    cb.record_success()
    assert cb.state == CLOSED and cb.window_counts() == (0, 0)


def test_a_failed_probe_opens_it_again_for_a_whole_timeout():
    clock = Clock()
    cb = breaker(clock)
    calls(cb, failed=4)
    clock.now += 5
    cb.before_call()
    cb.record_failure()
    assert cb.state == OPEN and cb.seconds_until_retry() == pytest.approx(5)


def test_a_cancelled_probe_frees_its_slot_and_records_nothing():
    clock = Clock()
    cb = breaker(clock, probes=1)
    calls(cb, failed=4)
    clock.now += 5
    cb.before_call()
    cb.record_cancelled()
    assert cb.state == HALF_OPEN
    cb.before_call()  # the next caller gets the slot
    cb.record_success()
    assert cb.state == CLOSED


def test_a_cancelled_call_is_neither_a_failure_nor_a_success():
    cb = breaker()

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            async with asyncio.timeout(0.05):
                async with cb.guard():
                    await asyncio.sleep(5)

    asyncio.run(main())
    assert cb.window_counts() == (0, 0)


def test_state_changes_are_reported_once_each():
    clock, seen = Clock(), []
    cb = CircuitBreaker("t", clock=clock, min_calls=1, reset_timeout=1, probes=1,
                        on_state_change=lambda old, new: seen.append((old, new)))
    calls(cb, failed=1)
    clock.now += 1
    calls(cb, ok=1)
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_two_slow_calls_through_one_breaker_overlap():
    cb = breaker()

    async def slow() -> None:
        async with cb.guard():
            await asyncio.sleep(SLOW)

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(slow(), slow())
        return time.perf_counter() - started

    assert asyncio.run(main()) < 1.5 * SLOW  # serialised, they would take 2 x SLOW


def test_calls_overlap_across_threads_too():
    cb = breaker()

    def slow() -> None:
        cb.before_call()
        time.sleep(SLOW)
        cb.record_success()

    threads = [threading.Thread(target=slow) for _ in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.perf_counter() - started < 2 * SLOW  # serialised: 4 x SLOW
    assert cb.window_counts() == (4, 0)


# -- why not pybreaker (README, "Circuit breakers") ---------------------------------------------------------

async def fail() -> None:
    raise RuntimeError("upstream exploded")


def test_trap_pybreaker_call_serialises_concurrent_calls():
    cb = pybreaker.CircuitBreaker(fail_max=5)
    threads = [threading.Thread(target=cb.call, args=(time.sleep, 0.1)) for _ in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.perf_counter() - started >= 0.39  # 4 x 0.1 s one after another; it can never be faster


def test_trap_pybreaker_counts_an_unawaited_failing_coroutine_as_success():
    cb = pybreaker.CircuitBreaker(fail_max=1)
    for _ in range(3):
        coroutine = cb.call(fail)  # returns the coroutine; nothing has failed yet
        coroutine.close()
    assert cb.current_state == "closed" and cb.fail_counter == 0
