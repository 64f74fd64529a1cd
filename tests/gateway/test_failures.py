"""Upstream faults: slow -> 504, unreachable -> 503 with Retry-After, repeated failures open the breaker."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
import pytest

from tests.gateway.conftest import Server


def test_slow_upstream_is_504_within_the_timeout(client, auth):
    started = time.perf_counter()
    response = client.get("/api/v1/bags/slow?seconds=8", headers=auth)
    assert response.status_code == 504
    assert response.json()["type"] == "urn:bagtrack:problem:upstream-timeout"
    assert time.perf_counter() - started < 5  # the timeout is 1 s; the upstream would take 8


def test_slow_upstream_does_not_hold_up_other_routes(client, auth):
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.get, "/api/v1/users/slow?seconds=8", headers=auth)
        time.sleep(0.1)
        assert client.get("/api/v1/bags", headers=auth).status_code == 200
        assert not slow.done()
        assert slow.result().status_code == 504


def test_upstream_5xx_is_passed_through(client, auth):
    response = client.get("/api/v1/bags/fail", headers=auth)
    assert response.status_code == 500
    assert response.json() == {"detail": "upstream exploded"}


def breaker(gateway: Server, upstream: str) -> str:
    """The state of the gateway's breaker to `upstream`, from its /ready (on the ops port)."""
    return httpx.get(gateway.ops_url + "/ready", timeout=10).json()["upstreams"][upstream]["breaker"]


@pytest.fixture(scope="module")
def scanning_down_gateway(start_gateway, dead_url) -> Server:
    """A gateway whose scanning upstream is unreachable (connections refused); auth is the fake."""
    return start_gateway(SCANNING_URL=dead_url)


@pytest.fixture(scope="module")
def scanning_down(scanning_down_gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=scanning_down_gateway.url, timeout=10) as http:
        yield http


def test_unreachable_upstream_is_503_with_retry_after(scanning_down, auth):
    response = scanning_down.post("/api/v1/scans/parent", headers=auth, json={"qr": "SB00001"})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    problem = response.json()
    assert problem["type"] == "urn:bagtrack:problem:upstream-unavailable"
    assert problem["request_id"] == response.headers["x-request-id"]


def test_breaker_opens_on_an_unreachable_upstream_and_then_refuses_at_once(scanning_down, scanning_down_gateway,
                                                                           auth):
    details = [scanning_down.get("/api/v1/bags", headers=auth).json()["detail"] for _ in range(6)]
    assert "circuit open" in details[-1]
    started = time.perf_counter()
    response = scanning_down.get("/api/v1/bags/SB00001", headers=auth)
    assert response.status_code == 503 and "circuit open" in response.json()["detail"]
    assert int(response.headers["retry-after"]) >= 1
    assert time.perf_counter() - started < 0.5
    assert breaker(scanning_down_gateway, "scanning") == "open"
    assert scanning_down.get("/api/v1/users", headers=auth).status_code == 200  # other upstreams unaffected


def test_poisoned_requests_never_open_a_breaker(gateway, client, auth):
    """50 requests that make an upstream answer 500 (a bug one client can trigger, as a NUL byte once did)
    leave it reachable for everyone else."""
    assert {client.get("/api/v1/bags/fail", headers=auth).status_code for _ in range(50)} == {500}
    assert client.get("/api/v1/bags", headers=auth).status_code == 200
    assert breaker(gateway, "scanning") == "closed"


def test_breaker_opens_on_the_upstreams_own_503s_then_half_opens_and_closes(start_gateway, auth):
    gateway = start_gateway(GATEWAY_BREAKER_MIN_CALLS="3", GATEWAY_BREAKER_RESET_TIMEOUT="1",
                            GATEWAY_BREAKER_PROBES="1")
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        assert [http.get("/api/v1/bags/sick", headers=auth).status_code for _ in range(3)] == [503] * 3
        refused = http.get("/api/v1/bags", headers=auth)
        assert refused.status_code == 503 and "circuit open" in refused.json()["detail"]
        assert http.get("/api/v1/users", headers=auth).status_code == 200
        time.sleep(1.1)  # reset_timeout: the next call is the half-open probe
        assert http.get("/api/v1/bags", headers=auth).status_code == 200
        assert breaker(gateway, "scanning") == "closed"
        assert http.get("/api/v1/bags", headers=auth).status_code == 200


def test_tokens_cannot_be_checked_while_auth_is_down_is_503_not_401(start_gateway, dead_url, auth):
    gateway = start_gateway(AUTH_URL=dead_url)
    response = httpx.get(gateway.url + "/api/v1/bags", headers=auth)
    assert response.status_code == 503
    assert "retry-after" in response.headers
    assert response.json()["detail"] == "cannot verify tokens: signing keys unavailable"


def test_an_event_stream_outlives_the_upstream_timeout_between_events(client, signing_key):
    """The dashboard's stream (gateway.routes.STREAMS) waits the stream read timeout between chunks, not the
    upstream timeout (1 s here) that bounds every other route; it needs no token at the gateway (its ticket is
    the dashboard's to check)."""
    started = time.monotonic()
    with client.stream("GET", "/api/v1/dashboard/stream?gap=1.5") as response:
        assert response.status_code == 200
        body = b"".join(response.iter_bytes())
    assert body.count(b"event: tick") == 3
    assert time.monotonic() - started >= 3.0  # two gaps of 1.5 s, each past the 1 s upstream timeout


def test_a_non_stream_route_is_still_cut_at_the_upstream_timeout(client, auth):
    with client.stream("GET", "/api/v1/bags/stream?gap=1.5", headers=auth) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # broken off after the first event, never looking whole
            response.read()
