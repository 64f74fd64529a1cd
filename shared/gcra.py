"""GCRA (the generic cell rate algorithm): a rate with a burst, exact and kept in one number per key.

A limit of `rate` per second with `burst` lets `burst` requests through at once from idle, then one every
1/`rate` seconds; a refused request changes nothing. The key holds the theoretical arrival time (TAT) of the next
request. Shared by every replica in Redis (`SCRIPT`, one atomic call that reads Redis's own clock, so replicas'
clocks do not matter), or kept in one process (`step`) while Redis is away. Tests can be exact: from idle, the
first `burst` pass and the next is refused with Retry-After = 1/rate.
"""
from __future__ import annotations

from dataclasses import dataclass

# KEYS[1] the key; ARGV[1] the emission interval and ARGV[2] the burst, in microseconds and requests.
# Replies {allowed, remaining, retry_after_us, reset_us}; the TAT is written only when the request is allowed.
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / interval), 0, new_tat - now}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int  # the burst: how many may pass at once from idle
    remaining: int  # how many more may pass right now
    retry_after: float  # seconds until the next one may pass (0 when this one passed)
    reset: float  # seconds until the bucket is full again


def step(tat: float | None, now: float, interval: float, burst: int) -> tuple[Decision, float | None]:
    """One request at `now` against the stored `tat`: the decision, and the TAT to store (None: unchanged)."""
    tat = now if tat is None or tat < now else tat
    new_tat = tat + interval
    allow_at = new_tat - interval * burst
    if now < allow_at:
        return Decision(False, burst, 0, allow_at - now, tat - now), None
    # The small epsilon keeps a float quotient like 2.9999999 from losing one request.
    return Decision(True, burst, int((now - allow_at) / interval + 1e-9), 0.0, new_tat - now), new_tat


def from_reply(reply: list, burst: int) -> Decision:
    allowed, remaining, retry_us, reset_us = (int(v) for v in reply)
    return Decision(bool(allowed), burst, remaining, retry_us / 1e6, reset_us / 1e6)
