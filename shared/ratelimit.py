"""Fixed-window rate limits kept in the shared cache (Redis), so replicas share one budget.

If Redis is down, counting falls back to this process: limits stay enforced, per replica.
"""
from __future__ import annotations

import math

from shared.cache import Cache
from shared.errors import ProblemError


class RateLimited(ProblemError):
    status, slug = 429, "rate-limited"


async def hit(cache: Cache, key: str, *, limit: int, window: float, what: str) -> None:
    """Count one attempt against `key`; raise 429 with Retry-After once `limit` is passed in `window` s."""
    count, reset_in = await cache.incr(f"rl:{key}", window)
    if count > limit:
        retry_after = max(1, math.ceil(reset_in))
        raise RateLimited(f"too many {what}; retry in {retry_after}s", headers={"Retry-After": str(retry_after)})
