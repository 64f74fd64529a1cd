"""Per-caller rate limits at the gateway, shared by every gateway replica through Redis (shared.gcra: GCRA, one
atomic script per request on Redis's clock).

Three limits, each a sustained rate with a burst (GatewaySettings.rate_*):
- `read`: GET and HEAD per signed-in user (a dashboard page, lookups, lists);
- `write`: every other method per signed-in user (scans, bills; an offline backlog replayed by the web app paces
  itself on Retry-After);
- `anonymous`: the routes that need no token (login, refresh, the JWKS, the event stream) per client address
  (the one shared.proxies resolved). auth's own login limits (per address, per account) stay where they are.

Over a limit: 429 with Retry-After and RateLimit-Limit / -Remaining / -Reset. With Redis away each replica counts
on its own (so up to N times the limit across N replicas, never none, never an error); Redis is tried again after
shared.cache's pause and takes over by itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from shared.cache import Cache
from shared.gcra import Decision
from shared.metrics import RATE_LIMITED

LIMIT_CONFIG = Gauge("bagtrack_rate_limit_config", "A gateway rate limit's settings: rate (per second) and burst",
                     ["limit", "setting"])
LIMIT_DECISIONS = Counter("bagtrack_rate_limit_decisions_total",
                          "Gateway rate-limit decisions, by limit, outcome and where they were counted "
                          "(redis: shared by every replica; local: this replica only, while Redis is away)",
                          ["limit", "outcome", "store"])

_SAFE = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    per_second: float
    burst: int

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second


class Limiter:
    def __init__(self, cache: Cache, *, read: Limit, write: Limit, anonymous: Limit) -> None:
        self.cache, self.read, self.write, self.anonymous = cache, read, write, anonymous
        for limit in (read, write, anonymous):
            LIMIT_CONFIG.labels(limit.name, "rate").set(limit.per_second)
            LIMIT_CONFIG.labels(limit.name, "burst").set(limit.burst)
        self._counted = {(limit.name, outcome, store): LIMIT_DECISIONS.labels(limit.name, outcome, store)
                         for limit in (read, write, anonymous) for outcome in ("allowed", "limited")
                         for store in ("redis", "local")}
        self._refused = {limit.name: RATE_LIMITED.labels("gateway", f"gateway-{limit.name}")
                         for limit in (read, write, anonymous)}

    def limit_for(self, method: str, user_id: int | None) -> Limit:
        if user_id is None:
            return self.anonymous
        return self.read if method in _SAFE else self.write

    async def check(self, method: str, user_id: int | None, address: str | None) -> tuple[Limit, Decision]:
        limit = self.limit_for(method, user_id)
        who = f"u{user_id}" if user_id is not None else f"a{address or '-'}"
        decision = await self.cache.gcra(f"rl:{limit.name}:{who}", limit.interval, limit.burst)
        # Read after the call: a Redis failure during it marks the cache unavailable, and the fallback decided.
        store = "redis" if self.cache.backend == "redis" and self.cache.available else "local"
        self._counted[(limit.name, "allowed" if decision.allowed else "limited", store)].inc()
        if not decision.allowed:
            self._refused[limit.name].inc()
        return limit, decision


def refusal_headers(decision: Decision) -> dict[str, str]:
    """Retry-After and the RateLimit fields (draft-ietf-httpapi-ratelimit-headers), in whole seconds, rounded up."""
    return {"Retry-After": str(max(1, math.ceil(decision.retry_after))),
            "RateLimit-Limit": str(decision.limit),
            "RateLimit-Remaining": str(decision.remaining),
            "RateLimit-Reset": str(max(1, math.ceil(decision.reset)))}
