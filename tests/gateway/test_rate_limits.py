"""The gateway's rate limits (gateway/limits.py, shared/gcra.py): GCRA, exact; one budget shared by two real
gateway processes through Redis; per user for reads and writes apart, per address without a token; 429 with
Retry-After and the RateLimit fields; Redis gone ⇒ each replica limits on its own (never no limit, never an error),
and back on Redis by itself; the defaults refuse a runaway script and never a scanner."""
from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest
import redis

from gateway.config import GatewaySettings
from shared import gcra
from shared.cache import MemoryCache, RedisCache
from tests.support import REDIS_URL, TcpProxy, metric_total, require_redis

API = "/api/v1"
# Slow enough that nothing refills while a test runs: the counts are the algorithm's, exactly.
SLOW = {"GATEWAY_RATE_WRITE_PER_SECOND": "0.01", "GATEWAY_RATE_WRITE_BURST": "7",
        "GATEWAY_RATE_READ_PER_SECOND": "0.01", "GATEWAY_RATE_READ_BURST": "5",
        "GATEWAY_RATE_ANONYMOUS_PER_SECOND": "0.01", "GATEWAY_RATE_ANONYMOUS_BURST": "4"}


def _clear_limits(url: str) -> None:
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match="bagtrack:gateway:rl:*"):
        client.delete(key)
    client.close()


def _user(signing_key) -> dict[str, str]:
    """A fresh user id, so no other test's count is in the way."""
    return {"Authorization": f"Bearer {signing_key.mint(sub=str(random.randrange(10**6, 10**9)))}"}


# --- the algorithm ------------------------------------------------------------------------------------------

def test_gcra_lets_the_burst_through_then_one_per_interval():
    tat, now, passed = None, 1000.0, []
    for _ in range(6):
        decision, new = gcra.step(tat, now, 0.5, 4)
        tat = new if new is not None else tat
        passed.append((decision.allowed, decision.remaining))
    assert passed == [(True, 3), (True, 2), (True, 1), (True, 0), (False, 0), (False, 0)]
    refused, _ = gcra.step(tat, now, 0.5, 4)
    assert refused.retry_after == pytest.approx(0.5) and refused.reset == pytest.approx(2.0)
    again, _ = gcra.step(tat, now + 0.5, 0.5, 4)  # one interval later: exactly one more
    assert again.allowed and again.remaining == 0


def test_the_redis_script_counts_exactly_as_the_algorithm():
    require_redis()
    _clear_limits(REDIS_URL)

    async def main():
        cache = RedisCache(REDIS_URL, "gateway")
        try:
            return [await cache.gcra("rl:test:exact", 10.0, 5) for _ in range(7)]
        finally:
            await cache.aclose()

    decisions = asyncio.run(main())
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert decisions[5].retry_after == pytest.approx(10.0, abs=0.5)
    assert decisions[5].reset == pytest.approx(50.0, abs=0.5)


def test_the_defaults_refuse_a_runaway_script_and_never_a_scanner():
    """Simulated on the algorithm with GatewaySettings' defaults: a scanner at 1 scan/s with a burst of 10 every
    minute, for a shift (8 h); a dashboard reading 3 parts every 5 s beside; a backlog of 300 scans replayed
    at 10/s; a script sending 200 writes a second."""
    s = GatewaySettings()
    write, read = (1 / s.rate_write_per_second, s.rate_write_burst), (1 / s.rate_read_per_second, s.rate_read_burst)

    def run(times: list[float], limit) -> int:
        tat, refused = None, 0
        for t in times:
            decision, new = gcra.step(tat, t, *limit)
            tat, refused = (new, refused) if new is not None else (tat, refused + 1)
        return refused

    shift = 8 * 3600
    scans = sorted([float(t) for t in range(shift)] + [m * 60 + i / 20 for m in range(shift // 60) for i in range(10)])
    assert run(scans, write) == 0
    assert run(sorted(t + i / 100 for t in range(0, shift, 5) for i in range(3)), read) == 0
    assert run([i / 10 for i in range(300)], write) == 0
    runaway = run([i / 200 for i in range(200 * 10)], write)
    assert runaway > 200 * 10 * 0.8, runaway


def test_memory_fallback_counts_like_redis():
    cache = MemoryCache("gateway")
    decisions = [cache.gcra_now("rl:k", 10.0, 3) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]


# --- two real gateways, one budget ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair(start_gateway):
    require_redis()
    _clear_limits(REDIS_URL)
    env = {"REDIS_URL": REDIS_URL, **SLOW}
    return start_gateway(**env), start_gateway(**env)


def test_two_gateways_share_one_budget_per_user(pair, signing_key):
    me = _user(signing_key)
    statuses = [httpx.post(pair[i % 2].url + f"{API}/scans/child", json={"n": i}, headers=me).status_code
                for i in range(10)]
    assert [s == 429 for s in statuses] == [False] * 7 + [True] * 3, statuses
    refused = httpx.post(pair[0].url + f"{API}/scans/child", json={}, headers=me)
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith("rate-limited") and "write" in refused.json()["detail"]
    assert 95 <= int(refused.headers["Retry-After"]) <= 100
    assert refused.headers["RateLimit-Limit"] == "7" and refused.headers["RateLimit-Remaining"] == "0"
    assert 690 <= int(refused.headers["RateLimit-Reset"]) <= 700
    # Reads are a budget of their own; another user is untouched.
    reads = [httpx.get(pair[i % 2].url + f"{API}/bags/SB00001", headers=me).status_code for i in range(6)]
    assert [s == 429 for s in reads] == [False] * 5 + [True], reads
    assert httpx.post(pair[1].url + f"{API}/scans/child", json={}, headers=_user(signing_key)).status_code != 429
    for gateway in pair:
        assert metric_total(gateway.ops_url + "/metrics", "bagtrack_rate_limit_decisions_total", limit="write",
                            store="redis") > 0
    assert sum(metric_total(g.ops_url + "/metrics", "bagtrack_rate_limited_total", limit="gateway-write")
               for g in pair) == 4
    assert metric_total(pair[0].ops_url + "/metrics", "bagtrack_rate_limit_config", limit="write", setting="burst") == 7


def test_without_a_token_the_limit_is_per_address(pair):
    statuses = [httpx.get(pair[i % 2].url + f"{API}/auth/jwks").status_code for i in range(6)]
    assert [s == 429 for s in statuses] == [False] * 4 + [True] * 2, statuses


def test_a_bad_token_is_a_401_and_counts_against_nobody(pair, signing_key):
    before = metric_total(pair[0].ops_url + "/metrics", "bagtrack_rate_limit_decisions_total")
    for _ in range(10):
        assert httpx.get(pair[0].url + f"{API}/bags/SB00001", headers={"Authorization": "Bearer x"}).status_code == 401
    assert metric_total(pair[0].ops_url + "/metrics", "bagtrack_rate_limit_decisions_total") == before


# --- Redis away and back --------------------------------------------------------------------------------------

def test_redis_gone_limits_per_replica_and_comes_back_by_itself(start_gateway, signing_key):
    require_redis()
    host, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].split(":")
    proxy = TcpProxy(host, int(port)).start()
    url = f"redis://127.0.0.1:{proxy.port}/{REDIS_URL.rsplit('/', 1)[1]}"
    gateway = start_gateway(REDIS_URL=url, **SLOW)
    me = _user(signing_key)
    try:
        assert httpx.post(gateway.url + f"{API}/scans/child", json={}, headers=me).status_code != 429
        assert metric_total(gateway.ops_url + "/metrics", "bagtrack_rate_limit_decisions_total", store="redis") == 1
        proxy.stop()
        # Redis gone: still limited — this replica's own count, from a fresh budget — and never a 5xx.
        statuses = [httpx.post(gateway.url + f"{API}/scans/child", json={}, headers=me, timeout=5).status_code
                    for _ in range(9)]
        assert all(s < 500 for s in statuses), statuses
        assert [s == 429 for s in statuses] == [False] * 7 + [True] * 2, statuses
        assert metric_total(gateway.ops_url + "/metrics", "bagtrack_rate_limit_decisions_total", store="local") == 9
        proxy.start()
        deadline = time.monotonic() + 10
        other = _user(signing_key)
        while metric_total(gateway.ops_url + "/metrics", "bagtrack_rate_limit_decisions_total", store="redis") < 2:
            assert time.monotonic() < deadline, "the gateway never went back to Redis"
            httpx.post(gateway.url + f"{API}/scans/child", json={}, headers=other)
            time.sleep(0.2)
    finally:
        proxy.stop()
