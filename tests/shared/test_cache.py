"""The cache's set / get_many / delete and its lock (SET NX PX, released only by its owner), on the in-process store
and on a real Redis; with Redis unreachable, reads miss, writes are skipped and the lock is this process's own."""
from __future__ import annotations

import asyncio
import secrets

import pytest

from shared.cache import MemoryCache, RedisCache
from tests.support import REDIS_URL, free_port, require_redis


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(params=["memory", "redis"])
def make_cache(request):
    """Caches of one kind, each call a new client on the same private namespace (two replicas' view of Redis)."""
    namespace = f"test-cache-{secrets.token_hex(4)}"
    if request.param == "redis":
        require_redis()
        yield lambda: RedisCache(REDIS_URL, namespace)

        async def clean() -> None:
            cache = RedisCache(REDIS_URL, namespace)
            await cache.clear()
            await cache.aclose()

        run(clean())
    else:
        shared = MemoryCache(namespace)
        yield lambda: shared


def test_set_overwrites_get_many_reads_in_order_and_delete_removes(make_cache):
    async def scenario() -> None:
        cache = make_cache()
        await cache.add("a", b"first", 10)
        await cache.set("a", b"second", 10)
        await cache.set("b", b"bee", 10)
        assert await cache.get_many(["b", "missing", "a"]) == [b"bee", None, b"second"]
        assert await cache.get_many([]) == []
        await cache.delete("a")
        await cache.delete("never-there")
        assert await cache.get("a") is None and await cache.get("b") == b"bee"
        await cache.set("short", b"x", 0.05)
        await asyncio.sleep(0.1)
        assert await cache.get("short") is None
        await cache.aclose()

    run(scenario())


def test_a_lock_has_one_holder_until_released_or_expired(make_cache):
    async def scenario() -> None:
        one, two = make_cache(), make_cache()
        assert await one.lock("refresh:k", 0.3, "replica-1") is True
        assert await two.lock("refresh:k", 0.3, "replica-2") is False
        await two.unlock("refresh:k", "replica-2")  # not the holder: nothing happens
        assert await two.lock("refresh:k", 0.3, "replica-2") is False
        await one.unlock("refresh:k", "replica-1")
        assert await two.lock("refresh:k", 0.3, "replica-2") is True
        await asyncio.sleep(0.4)  # lapsed: the next one takes it, and the lapsed holder cannot release it
        assert await one.lock("refresh:k", 5, "replica-1") is True
        await two.unlock("refresh:k", "replica-2")
        assert await two.lock("refresh:k", 5, "replica-2") is False
        for cache in {id(one): one, id(two): two}.values():
            await cache.aclose()

    run(scenario())


def test_concurrent_lockers_get_exactly_one_lock(make_cache):
    async def scenario() -> int:
        caches = [make_cache() for _ in range(10)]
        taken = await asyncio.gather(*(c.lock("race", 5, f"owner-{i}") for i, c in enumerate(caches)))
        for cache in {id(c): c for c in caches}.values():
            await cache.aclose()
        return sum(taken)

    assert run(scenario()) == 1


def test_with_redis_unreachable_reads_miss_writes_skip_and_the_lock_is_local():
    async def scenario() -> None:
        cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", "nowhere", timeout=0.1)
        await cache.set("a", b"1", 10)
        assert await cache.get_many(["a", "b"]) == [None, None]
        assert cache.available is False  # bypassed for a while: no more round trips to a dead server
        await cache.delete("a")
        assert await cache.lock("k", 5, "me") is True
        assert await cache.lock("k", 5, "other") is False  # this process's own lock still de-duplicates
        await cache.unlock("k", "me")
        assert await cache.lock("k", 5, "other") is True
        await cache.aclose()

    run(scenario())
