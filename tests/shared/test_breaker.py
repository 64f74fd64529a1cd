"""AsyncCircuitBreaker keeps awaited I/O outside pybreaker's lock and counts awaited failures (docs/performance.md, "Traps")."""
from __future__ import annotations

import asyncio
import threading
import time

import pybreaker
import pytest

from shared.breaker import AsyncCircuitBreaker, CircuitBreakerError

SLOW = 0.3


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom("upstream exploded")


async def succeed() -> str:
    return "ok"


def run(coro):
    return asyncio.run(coro)


def test_two_slow_calls_through_one_breaker_overlap():
    breaker = AsyncCircuitBreaker("slow", fail_max=5)

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(breaker.call(asyncio.sleep, SLOW), breaker.call(asyncio.sleep, SLOW))
        return time.perf_counter() - started

    assert run(main()) < 1.5 * SLOW  # serialised, they would take 2 x SLOW


def test_calls_overlap_across_threads_too():
    breaker = AsyncCircuitBreaker("threads")
    threads = [threading.Thread(target=lambda: run(breaker.call(asyncio.sleep, SLOW))) for _ in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.perf_counter() - started < 2 * SLOW  # serialised: 4 x SLOW


def test_an_awaited_failure_counts_and_opens_the_breaker_after_fail_max():
    breaker = AsyncCircuitBreaker("failing", fail_max=3, reset_timeout=60)

    async def main() -> None:
        for expected in (1, 2):
            with pytest.raises(Boom):
                await breaker.call(fail)
            assert breaker.fail_counter == expected and breaker.state == "closed"
        with pytest.raises(Boom):  # the caller sees its own error, not pybreaker's
            await breaker.call(fail)
        assert breaker.state == "open"
        called = False

        async def should_not_run() -> None:
            nonlocal called
            called = True

        with pytest.raises(CircuitBreakerError):
            await breaker.call(should_not_run)
        assert not called
        assert 0 < breaker.seconds_until_retry() <= 60

    run(main())


def test_a_success_resets_the_consecutive_failure_count():
    breaker = AsyncCircuitBreaker("flaky", fail_max=2)

    async def main() -> None:
        for _ in range(3):
            with pytest.raises(Boom):
                await breaker.call(fail)
            assert await breaker.call(succeed) == "ok"
        assert breaker.state == "closed"

    run(main())


def opened(reset_timeout: float = 0.1) -> AsyncCircuitBreaker:
    breaker = AsyncCircuitBreaker("trial", fail_max=1, reset_timeout=reset_timeout)
    with pytest.raises(Boom):
        run(breaker.call(fail))
    assert breaker.state == "open"
    time.sleep(reset_timeout + 0.05)
    return breaker


def test_half_open_admits_exactly_one_trial_and_its_success_closes():
    breaker = opened()

    async def main() -> None:
        trial = asyncio.create_task(breaker.call(asyncio.sleep, 0.1))
        await asyncio.sleep(0.01)
        assert breaker.state == "half-open"
        with pytest.raises(CircuitBreakerError):
            await breaker.call(succeed)  # a second caller while the trial is in flight
        await trial
        assert breaker.state == "closed"
        assert await breaker.call(succeed) == "ok"

    run(main())


def test_a_failed_trial_opens_again():
    breaker = opened()
    with pytest.raises(Boom):
        run(breaker.call(fail))
    assert breaker.state == "open"


def test_a_cancelled_call_is_not_a_failure_nor_a_success():
    breaker = AsyncCircuitBreaker("cancel", fail_max=2)

    async def main() -> None:
        with pytest.raises(Boom):
            await breaker.call(fail)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(breaker.call(asyncio.sleep, 5), 0.05)
        assert breaker.fail_counter == 1 and breaker.state == "closed"

    run(main())


def test_a_cancelled_trial_leaves_the_breaker_half_open_for_the_next_caller():
    breaker = opened()

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(breaker.call(asyncio.sleep, 5), 0.05)
        assert breaker.state == "half-open"
        assert await breaker.call(succeed) == "ok"
        assert breaker.state == "closed"

    run(main())


def test_trap_pybreaker_call_serialises_concurrent_calls():
    # The trap this module avoids: pybreaker holds its lock for the whole wrapped call.
    breaker = pybreaker.CircuitBreaker(fail_max=5)
    threads = [threading.Thread(target=breaker.call, args=(time.sleep, 0.1)) for _ in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.perf_counter() - started >= 0.39  # 4 x 0.1 s one after another; it can never be faster


def test_trap_pybreaker_counts_an_unawaited_failing_coroutine_as_success():
    breaker = pybreaker.CircuitBreaker(fail_max=1)
    for _ in range(3):
        coroutine = breaker.call(fail)  # returns the coroutine; nothing has failed yet
        coroutine.close()
    assert breaker.current_state == "closed" and breaker.fail_counter == 0
