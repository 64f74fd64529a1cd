"""What per-replica breakers cost, measured on two real gateway processes: an upstream that hangs (a TCP proxy
that swallows every byte) is paid for with `min_calls` timed-out calls *per gateway replica* before each one
answers 503 at once; a breaker shared through Redis would pay `min_calls` once. README "Circuit breakers" keeps
the breakers per replica (as Envoy's outlier detection ejects per host) and quotes this."""
from __future__ import annotations

import time
from urllib.parse import urlparse

import httpx

from tests.support import TcpProxy, metric_total

MIN_CALLS = 5
TIMEOUT = 0.5


def test_each_replica_pays_min_calls_before_its_breaker_opens(start_gateway, fake_upstream, auth):
    target = urlparse(fake_upstream.url)
    proxy = TcpProxy(target.hostname, target.port).start()
    env = {"BILLING_URL": f"http://127.0.0.1:{proxy.port}", "UPSTREAM_TIMEOUT": str(TIMEOUT),
           "GATEWAY_BREAKER_MIN_CALLS": str(MIN_CALLS), "GATEWAY_BREAKER_RESET_TIMEOUT": "60",
           "GATEWAY_RATE_LIMITS": "false"}
    gateways = [start_gateway(**env), start_gateway(**env)]
    try:
        proxy.hang()
        slow, fast = [0, 0], [0, 0]
        started = time.perf_counter()
        for i in range(2 * (MIN_CALLS + 3)):
            which = i % 2
            t0 = time.perf_counter()
            response = httpx.get(gateways[which].url + "/api/v1/bills/BILL-1", headers=auth, timeout=5)
            took = time.perf_counter() - t0
            assert response.status_code in (503, 504), response.text
            if took >= TIMEOUT * 0.8:
                slow[which] += 1
            else:
                fast[which] += 1
        elapsed = time.perf_counter() - started
        print(f"\nhung upstream, 2 gateway replicas, min_calls {MIN_CALLS}, timeout {TIMEOUT:g} s: "
              f"{sum(slow)} calls waited the timeout ({slow} per replica), {sum(fast)} answered 503 at once; "
              f"{elapsed:.1f} s. A shared breaker would have waited on {MIN_CALLS}.")
        assert slow == [MIN_CALLS, MIN_CALLS] and fast == [3, 3]
        for gateway in gateways:
            ready = httpx.get(gateway.ops_url + "/ready", timeout=5).json()
            assert ready["status"] == "degraded" and ready["upstreams"]["billing"]["breaker"] == "open", ready
            assert metric_total(gateway.ops_url + "/metrics", "bagtrack_circuit_breaker_open", upstream="billing") == 1
    finally:
        proxy.stop()
