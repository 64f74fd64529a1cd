"""A namespaced cache: Redis when REDIS_URL is set, an in-process store otherwise.

When Redis is configured but stops answering, reads miss, writes are skipped and counters fall back
to this process (so login limits stay strict per replica); Redis is retried after a short pause.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
import redis.asyncio as aioredis

log = logging.getLogger("bagtrack.cache")

# Written over an entry when its data changes. While it stands (`hold` seconds) readers miss and may not
# fill the entry: a reader that read the old rows just before the writer committed cannot put them back.
TOMBSTONE = b"\x00invalidated"


class MemoryCache:
    """A thread-safe TTL store for one process; the embedded default and Redis's fallback."""

    backend = "memory"

    def __init__(self, namespace: str, max_entries: int = 50_000) -> None:
        self.namespace = namespace
        self._data: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._max_entries = max_entries

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            expires, value = item
            if expires <= time.monotonic():
                del self._data[key]
                return None
            return value

    def set(self, key: str, value: bytes | str, ttl: float) -> None:
        data = value.encode() if isinstance(value, str) else value
        with self._lock:
            if len(self._data) >= self._max_entries:
                self._evict_expired()
            self._data[key] = (time.monotonic() + ttl, data)

    async def aget(self, key: str) -> bytes | None:
        """`get` for async code (no I/O here, so no thread hop)."""
        return self.get(key)

    def tombstone(self, keys, hold: float) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._data[key] = (now + hold, TOMBSTONE)

    def add(self, key: str, value: bytes | str, ttl: float) -> None:
        """Set only if the key holds nothing live (Redis SET NX)."""
        data = value.encode() if isinstance(value, str) else value
        now = time.monotonic()
        with self._lock:
            item = self._data.get(key)
            if item is None or item[0] <= now:
                self._data[key] = (now + ttl, data)

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def incr(self, key: str, ttl: float) -> tuple[int, float]:
        """Count one more hit in a fixed window; returns (count, seconds until the window resets)."""
        now = time.monotonic()
        with self._lock:
            expires, count = self._data.get(key, (0.0, 0))
            if expires <= now:
                expires, count = now + ttl, 0
            count += 1
            self._data[key] = (expires, count)
            return count, expires - now

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _evict_expired(self) -> None:
        now = time.monotonic()
        for key in [k for k, (exp, _) in self._data.items() if exp <= now]:
            del self._data[key]
        if len(self._data) >= self._max_entries:
            self._data.clear()


class RedisCache:
    """Redis with short timeouts; a failure switches to bypass mode for `retry_after` seconds."""

    backend = "redis"

    def __init__(self, url: str, namespace: str, *, timeout: float = 0.25, retry_after: float = 2.0) -> None:
        self.namespace = namespace
        self._prefix = f"bagtrack:{namespace}:"
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._async_client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._fallback = MemoryCache(namespace)
        self._down_until = 0.0
        self._retry_after = retry_after

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        if self.available:
            log.warning("redis unavailable, bypassing cache for %.0fs: %s", self._retry_after, exc)
        self._down_until = time.monotonic() + self._retry_after

    def get(self, key: str) -> bytes | None:
        if not self.available:
            return None
        try:
            return self._client.get(self._prefix + key)
        except redis.RedisError as exc:
            self._failed(exc)
            return None

    async def aget(self, key: str) -> bytes | None:
        """`get` on the event loop (redis.asyncio): a hot read path then needs no thread hop."""
        if not self.available:
            return None
        try:
            return await self._async_client.get(self._prefix + key)
        except redis.RedisError as exc:
            self._failed(exc)
            return None

    def set(self, key: str, value: bytes | str, ttl: float) -> None:
        if not self.available:
            return
        try:
            self._client.set(self._prefix + key, value, px=max(1, int(ttl * 1000)))
        except redis.RedisError as exc:
            self._failed(exc)

    def tombstone(self, keys, hold: float) -> None:
        # Tried even in bypass mode: a lost invalidation would serve stale data once Redis is back.
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.set(self._prefix + key, TOMBSTONE, px=max(1, int(hold * 1000)))
            pipe.execute()
        except redis.RedisError as exc:
            self._failed(exc)
            log.error("cache invalidation lost for %s: %s", list(keys), exc)

    def add(self, key: str, value: bytes | str, ttl: float) -> None:
        if not self.available:
            return
        try:
            self._client.set(self._prefix + key, value, px=max(1, int(ttl * 1000)), nx=True)
        except redis.RedisError as exc:
            self._failed(exc)

    def delete(self, *keys: str) -> None:
        # Invalidation must not be skipped silently while Redis is flaky: try even in bypass mode.
        if not keys:
            return
        try:
            self._client.delete(*(self._prefix + k for k in keys))
        except redis.RedisError as exc:
            self._failed(exc)

    def incr(self, key: str, ttl: float) -> tuple[int, float]:
        if self.available:
            try:
                pipe = self._client.pipeline(transaction=True)
                pipe.incr(self._prefix + key)
                pipe.pexpire(self._prefix + key, max(1, int(ttl * 1000)), nx=True)
                pipe.pttl(self._prefix + key)
                count, _, pttl = pipe.execute()
                return int(count), max(pttl, 0) / 1000
            except redis.RedisError as exc:
                self._failed(exc)
        return self._fallback.incr(key, ttl)

    def clear(self) -> None:
        """Drop every key of this namespace (and the local fallback counters)."""
        self._fallback.clear()
        keys = list(self._client.scan_iter(match=self._prefix + "*", count=1000))
        if keys:
            self._client.delete(*keys)

    def ping(self) -> None:
        self._client.ping()
        self._down_until = 0.0

    def close(self) -> None:
        self._client.close()

    async def aclose(self) -> None:
        await self._async_client.aclose()


Cache = MemoryCache | RedisCache


def create_cache(redis_url: str | None, namespace: str) -> Cache:
    return RedisCache(redis_url, namespace) if redis_url else MemoryCache(namespace)


def invalidate(cache: Cache, *keys: str, hold: float = 2.0) -> None:
    """Call after the commit that changed the data behind `keys`."""
    if keys:
        cache.tombstone(keys, hold)
