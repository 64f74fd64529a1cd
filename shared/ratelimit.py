"""Fixed-window rate limits kept in the shared cache (Redis), so replicas share one budget.

If Redis is down, counting falls back to this process: limits stay enforced, per replica.
"""
from __future__ import annotations

import math

from shared.cache import Cache
from shared.errors import ProblemError
from shared.metrics import RATE_LIMITED


class RateLimited(ProblemError):
    status, slug = 429, "rate-limited"


async def hit(cache: Cache, name: str, who: str, *, limit: int, window: float, what: str) -> None:
    """Count one attempt of `who` against the limit `name`; raise 429 with Retry-After once `limit` is passed in
    `window` s. Each refusal is counted in bagtrack_rate_limited_total{limit=name}."""
    count, reset_in = await cache.incr(f"rl:{name}:{who}", window)
    if count > limit:
        RATE_LIMITED.labels(cache.namespace, name).inc()
        retry_after = max(1, math.ceil(reset_in))
        raise RateLimited(f"too many {what}; retry in {retry_after}s", headers={"Retry-After": str(retry_after)})
