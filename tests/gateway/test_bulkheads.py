"""Bulkheads (gateway/proxy.py): a cap on requests in flight from the gateway to each upstream. A slow upstream
fills its own and answers 503 + Retry-After at once past it; the other upstreams keep answering as before."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from gateway.config import GatewaySettings
from tests.support import metric_total

API = "/api/v1"


@pytest.fixture(scope="module")
def gateway(start_gateway):
    # scanning's cap is 3; the dashboard keeps the default. Rate limits off: this is about capacity only.
    return start_gateway(GATEWAY_BULKHEADS="scanning=3", GATEWAY_RATE_LIMITS="false", UPSTREAM_TIMEOUT="10")


def test_a_slow_upstream_fills_only_its_own_bulkhead(gateway, auth):
    slow: list[int] = []
    threads = [threading.Thread(target=lambda: slow.append(
        httpx.get(gateway.url + f"{API}/bags/slow", params={"seconds": "2"}, headers=auth, timeout=10).status_code))
        for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while metric_total(gateway.ops_url + "/metrics", "bagtrack_upstream_in_flight", upstream="scanning") < 3:
        assert time.monotonic() < deadline, "the slow requests never reached the upstream"
        time.sleep(0.02)
    started = time.perf_counter()
    refused = httpx.get(gateway.url + f"{API}/bags/SB00001", headers=auth)
    refused_in = time.perf_counter() - started
    started = time.perf_counter()
    other = httpx.get(gateway.url + f"{API}/dashboard/stats", headers=auth)
    other_in = time.perf_counter() - started
    for thread in threads:
        thread.join(10)
    print(f"\nscanning full: 503 in {refused_in * 1000:.1f} ms; the dashboard answered in {other_in * 1000:.1f} ms")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.json()["type"].endswith("upstream-busy")
    assert refused_in < 1.0  # at once, not after the slow ones (2 s)
    assert other.status_code == 200 and other_in < 1.0
    assert slow == [200, 200, 200]
    assert metric_total(gateway.ops_url + "/metrics", "bagtrack_bulkhead_rejected_total", upstream="scanning") == 1
    assert metric_total(gateway.ops_url + "/metrics", "bagtrack_bulkhead_capacity", upstream="scanning") == 3
    assert metric_total(gateway.ops_url + "/metrics", "bagtrack_upstream_in_flight", upstream="scanning") == 0
    # Free again once the slow ones are done.
    assert httpx.get(gateway.url + f"{API}/bags/SB00001", headers=auth).status_code == 200


def test_bulkhead_overrides_are_validated():
    assert GatewaySettings(bulkheads="billing=50, dashboard=40").bulkhead_caps()["billing"] == 50
    for bad in ("billing", "billing=0", "nginx=3", "billing=x"):
        with pytest.raises(ValueError):
            GatewaySettings(bulkheads=bad).bulkhead_caps()
