"""Failure throttles: `limit` failures of one key within a fixed window refuse that key (429 + Retry-After) until
the window ends. Only failures count, so a person who types the password right is never slowed by the throttle.

The counter and the refusal live in the shared cache (Redis), so replicas share them; while Redis is unreachable
both fall back to this process, so the throttle stays in force per replica.
"""
from __future__ import annotations

import math
import time

from shared.cache import Cache, MemoryCache
from shared.metrics import RATE_LIMITED
from shared.ratelimit import RateLimited


class FailureThrottle:
    def __init__(self, cache: Cache, name: str, *, limit: int, window: float, what: str) -> None:
        self.cache, self.name, self.limit, self.window, self.what = cache, name, limit, window, what
        self._local = MemoryCache(cache.namespace)  # used only while the shared cache is down
        # Exported as 0 from start-up, so the first refusal shows in increase() (bagtrack_rate_limited_total).
        self._refusals = RATE_LIMITED.labels(cache.namespace, name)

    def _store(self) -> Cache:
        return self.cache if self.cache.available else self._local

    async def check(self, key: str) -> None:
        """Raise 429 with Retry-After if `key` has used up its failures in the current window.

        The detail names no number and no account state: the answer is the same for every key that is refused."""
        value = await self._store().get(f"{self.name}:block:{key}")
        if value is None:
            return
        try:
            until = float(value)
        except (TypeError, ValueError):
            return
        retry_after = math.ceil(until - time.time())
        if retry_after > 0:
            self._refusals.inc()
            raise RateLimited(f"too many {self.what}; retry later", headers={"Retry-After": str(retry_after)})

    async def failed(self, key: str) -> None:
        """Count one failure of `key`; the one that reaches `limit` refuses the key until its window ends."""
        store = self._store()
        count, reset_in = await store.incr(f"{self.name}:fail:{key}", self.window)
        if count >= self.limit and reset_in > 0:
            await store.add(f"{self.name}:block:{key}", f"{time.time() + reset_in:.3f}".encode(), reset_in)
