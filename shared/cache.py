"""A namespaced cache: Redis when REDIS_URL is set, an in-process store otherwise. Async, on the event loop.

When Redis is configured but stops answering, reads miss, writes are skipped and counters fall back
to this process (so login limits stay strict per replica); Redis is retried after a short pause.
"""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Iterable, Sequence

from shared import gcra
from shared.gcra import Decision
from shared.resp import RedisError, ReplyError, RespClient

log = logging.getLogger("bagtrack.cache")

# Written over an entry when its data changes. While it stands (`hold` seconds) readers miss and may not
# fill the entry: a reader that read the old rows just before the writer committed cannot put them back.
TOMBSTONE = b"\x00invalidated"
# Delete a lock only while its owner still holds it.
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"


class MemoryCache:
    """A TTL store for one process (one event loop, so no locks); the embedded default and Redis's fallback."""

    backend = "memory"
    available = True  # one process's own memory: there is nothing to be down

    def __init__(self, namespace: str, max_entries: int = 50_000) -> None:
        self.namespace = namespace
        self._data: dict[str, tuple[float, object]] = {}
        self._max_entries = max_entries

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= time.monotonic():
            del self._data[key]
            return None
        return value

    async def add(self, key: str, value: bytes, ttl: float) -> None:
        """Set only if the key holds nothing live (Redis SET NX)."""
        now = time.monotonic()
        item = self._data.get(key)
        if item is None or item[0] <= now:
            if len(self._data) >= self._max_entries:
                self._evict_expired()
            self._data[key] = (now + ttl, value)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Set unconditionally (Redis SET PX)."""
        if len(self._data) >= self._max_entries:
            self._evict_expired()
        self._data[key] = (time.monotonic() + ttl, value)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Each key's value (None when absent), in order (Redis MGET)."""
        return [await self.get(key) for key in keys]

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def lock(self, key: str, ttl: float, owner: str) -> bool:
        """Take `key` for `owner` for `ttl` seconds unless someone holds it; whether it was taken."""
        return self.lock_now(key, ttl, owner)

    def lock_now(self, key: str, ttl: float, owner: str) -> bool:
        now = time.monotonic()
        item = self._data.get(key)
        if item is not None and item[0] > now:
            return False
        self._data[key] = (now + ttl, owner)
        return True

    async def unlock(self, key: str, owner: str) -> None:
        """Release `key` if `owner` still holds it (a lock that lapsed and was taken by another stays theirs)."""
        self.unlock_now(key, owner)

    def unlock_now(self, key: str, owner: str) -> None:
        item = self._data.get(key)
        if item is not None and item[1] == owner:
            del self._data[key]

    async def tombstone(self, keys: Iterable[str], hold: float) -> None:
        until = time.monotonic() + hold
        for key in keys:
            self._data[key] = (until, TOMBSTONE)

    async def incr(self, key: str, ttl: float) -> tuple[int, float]:
        return self.incr_now(key, ttl)

    def incr_now(self, key: str, ttl: float) -> tuple[int, float]:
        """Count one more hit in a fixed window; returns (count, seconds until the window resets)."""
        now = time.monotonic()
        expires, count = self._data.get(key, (0.0, 0))
        if expires <= now:
            expires, count = now + ttl, 0
        count += 1
        self._data[key] = (expires, count)
        return count, expires - now

    async def gcra(self, key: str, interval: float, burst: int) -> Decision:
        return self.gcra_now(key, interval, burst)

    def gcra_now(self, key: str, interval: float, burst: int) -> Decision:
        """One request against a rate limit kept in this process (shared.gcra)."""
        now = time.monotonic()
        entry = self._data.get(key)
        tat = entry[1] if entry is not None and entry[0] > now else None
        decision, new_tat = gcra.step(tat, now, interval, burst)
        if new_tat is not None:
            if len(self._data) >= self._max_entries:
                self._evict_expired()
            self._data[key] = (new_tat, new_tat)  # expires when the bucket is full again
        return decision

    async def clear(self) -> None:
        self._data.clear()

    async def ping(self) -> None:
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
        self._client = RespClient(url, timeout=timeout)
        self._fallback = MemoryCache(namespace)
        self._down_until = 0.0
        self._retry_after = retry_after
        self._gcra_sha = hashlib.sha1(gcra.SCRIPT.encode()).hexdigest()

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        if self.available:
            log.warning("redis unavailable, bypassing cache for %.0fs: %s", self._retry_after, exc)
        self._down_until = time.monotonic() + self._retry_after

    async def get(self, key: str) -> bytes | None:
        if not self.available:
            return None
        try:
            return await self._client.call("GET", self._prefix + key)
        except RedisError as exc:
            self._failed(exc)
            return None

    async def add(self, key: str, value: bytes, ttl: float) -> None:
        if not self.available:
            return
        try:
            await self._client.call("SET", self._prefix + key, value, "PX", max(1, int(ttl * 1000)), "NX")
        except RedisError as exc:
            self._failed(exc)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if not self.available:
            return
        try:
            await self._client.call("SET", self._prefix + key, value, "PX", max(1, int(ttl * 1000)))
        except RedisError as exc:
            self._failed(exc)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """One MGET; every key misses while Redis is away."""
        if not keys:
            return []
        if self.available:
            try:
                return await self._client.call("MGET", *(self._prefix + key for key in keys))
            except RedisError as exc:
                self._failed(exc)
        return [None] * len(keys)

    async def delete(self, key: str) -> None:
        if not self.available:
            return
        try:
            await self._client.call("DEL", self._prefix + key)
        except RedisError as exc:
            self._failed(exc)

    async def lock(self, key: str, ttl: float, owner: str) -> bool:
        """SET NX PX, shared by every replica; while Redis is away, this process's own lock (each replica then
        takes its own: the fallback never blocks the work the lock only de-duplicates)."""
        if self.available:
            try:
                return await self._client.call("SET", self._prefix + key, owner, "PX", max(1, int(ttl * 1000)),
                                               "NX") == "OK"
            except RedisError as exc:
                self._failed(exc)
        return self._fallback.lock_now(key, ttl, owner)

    async def unlock(self, key: str, owner: str) -> None:
        """Compare-and-delete in one Lua call (a lock Redis lost sight of lapses after its ttl)."""
        self._fallback.unlock_now(key, owner)
        if not self.available:
            return
        try:
            await self._client.call("EVAL", _UNLOCK, 1, self._prefix + key, owner)
        except RedisError as exc:
            self._failed(exc)

    async def tombstone(self, keys: Iterable[str], hold: float) -> None:
        # Tried even in bypass mode: a lost invalidation would serve stale data once Redis is back.
        keys = list(keys)
        hold_ms = max(1, int(hold * 1000))
        try:
            await self._client.pipeline([("SET", self._prefix + key, TOMBSTONE, "PX", hold_ms) for key in keys])
        except RedisError as exc:
            self._failed(exc)
            log.error("cache invalidation lost for %s: %s", keys, exc)

    async def incr(self, key: str, ttl: float) -> tuple[int, float]:
        """A fixed-window counter shared by every replica; this process's own while Redis is away."""
        if self.available:
            name = self._prefix + key
            try:
                replies = await self._client.pipeline([("MULTI",), ("INCR", name),
                                                       ("PEXPIRE", name, max(1, int(ttl * 1000)), "NX"),
                                                       ("PTTL", name), ("EXEC",)])
                if isinstance(replies[-1], list):
                    count, _, pttl = replies[-1]
                    return int(count), max(pttl, 0) / 1000
                raise RedisError(f"counter transaction failed: {replies}")
            except RedisError as exc:
                self._failed(exc)
        return self._fallback.incr_now(key, ttl)

    async def gcra(self, key: str, interval: float, burst: int) -> Decision:
        """A rate limit shared by every replica (shared.gcra, one atomic script on Redis's clock); this process's
        own while Redis is away, so a limit is never lifted, only counted per replica for a while."""
        if self.available:
            try:
                reply = await self._script(gcra.SCRIPT, self._gcra_sha, self._prefix + key,
                                           max(1, round(interval * 1e6)), burst)
                return gcra.from_reply(reply, burst)
            except RedisError as exc:
                self._failed(exc)
        return self._fallback.gcra_now(key, interval, burst)

    async def _script(self, script: str, sha: str, key: str, *args):
        """EVALSHA, loading the script once when Redis does not know it (a restart, a flush)."""
        try:
            return await self._client.call("EVALSHA", sha, 1, key, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self._client.call("EVAL", script, 1, key, *args)

    async def clear(self) -> None:
        """Drop every key of this namespace (and the local fallback counters)."""
        await self._fallback.clear()
        cursor = b"0"
        while True:
            cursor, keys = await self._client.call("SCAN", cursor, "MATCH", self._prefix + "*", "COUNT", 1000)
            if keys:
                await self._client.call("DEL", *keys)
            if cursor == b"0":
                return

    async def ping(self) -> None:
        await self._client.call("PING")
        self._down_until = 0.0

    async def aclose(self) -> None:
        await self._client.aclose()


Cache = MemoryCache | RedisCache


def create_cache(redis_url: str | None, namespace: str) -> Cache:
    return RedisCache(redis_url, namespace) if redis_url else MemoryCache(namespace)


async def invalidate(cache: Cache, keys: Iterable[str], hold: float = 2.0) -> None:
    """Call after the commit that changed the data behind `keys`."""
    keys = list(keys)
    if keys:
        await cache.tombstone(keys, hold)
