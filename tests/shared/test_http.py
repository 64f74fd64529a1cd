"""ResilientClient against real servers on loopback: overlap, timeouts, refused connections, retries."""
from __future__ import annotations

import asyncio
import socket
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
from aiohttp import web

from shared.http import ResilientClient, UpstreamTimeout, UpstreamUnavailable
from shared.logging import request_id_var
from tests.support import free_port

SLOW = 0.3


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", SLOW)))
    return web.json_response({"slept": True})


async def fail(_: web.Request) -> web.Response:
    return web.json_response({"detail": "boom"}, status=500)


async def sick(_: web.Request) -> web.Response:
    return web.json_response({"detail": "overloaded"}, status=503, headers={"Retry-After": "1"})


async def dependency_down(_: web.Request) -> web.Response:
    return web.json_response({"detail": "billing is down"}, status=503,
                             headers={"Retry-After": "2", "X-Dependency-Failure": "billing"})


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"request_id": request.headers.get("X-Request-ID")})


@asynccontextmanager
async def upstream(routes: list | None = None) -> AsyncIterator[str]:
    """An aiohttp server on a free loopback port, in this event loop: `routes`, or the handlers above."""
    app = web.Application()
    app.add_routes(routes or [web.get("/slow", slow), web.get("/fail", fail), web.get("/echo", echo),
                              web.get("/dependency-down", dependency_down), web.get("/sick", sick)])
    runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def client_for(base_url: str, **options) -> AsyncIterator[ResilientClient]:
    client = ResilientClient("up", base_url, service="test", **options)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


def test_concurrent_slow_requests_overlap():
    async def main() -> float:
        async with upstream() as url, client_for(url) as client:
            started = time.perf_counter()
            responses = await asyncio.gather(*(client.request("GET", "/slow") for _ in range(4)))
            assert [r.status for r in responses] == [200] * 4
            return time.perf_counter() - started

    assert asyncio.run(main()) < 2 * SLOW  # one at a time would take 4 x SLOW


def test_request_id_of_the_current_request_is_forwarded():
    async def main() -> None:
        request_id_var.set("req-42")
        async with upstream() as url, client_for(url) as client:
            assert (await client.request("GET", "/echo")).json() == {"request_id": "req-42"}

    asyncio.run(main())


def test_slow_upstream_raises_upstream_timeout_and_counts_as_failure():
    async def main() -> None:
        async with upstream() as url, client_for(url, timeout=0.2) as client:
            started = time.perf_counter()
            with pytest.raises(UpstreamTimeout) as caught:
                await client.request("GET", "/slow?seconds=3")
            assert time.perf_counter() - started < 2
            assert caught.value.status == 504
            assert client.breaker.window_counts() == (1, 1)

    asyncio.run(main())


def test_refused_connection_raises_unavailable_and_opens_the_breaker():
    async def main() -> None:
        async with client_for(f"http://127.0.0.1:{free_port()}", breaker=dict(min_calls=3, reset_timeout=30)) as client:
            with pytest.raises(UpstreamUnavailable) as first:
                await client.request("POST", "/bills")
            assert first.value.status == 503 and "Retry-After" in first.value.headers
            for _ in range(2):
                with pytest.raises(UpstreamUnavailable):
                    await client.request("POST", "/bills")
            assert client.breaker.state == "open"
            with pytest.raises(UpstreamUnavailable) as refused:
                await client.request("POST", "/bills")
            assert "circuit open" in refused.value.detail
            assert int(refused.value.headers["Retry-After"]) >= 1

    asyncio.run(main())


def test_a_500_is_returned_and_never_opens_the_breaker():
    """A 500 is a bug one client can trigger with its own request (a NUL byte once did): it must not refuse
    everybody else."""

    async def main() -> None:
        async with upstream() as url, client_for(url, breaker=dict(min_calls=2)) as client:
            for _ in range(50):
                assert (await client.request("GET", "/fail")).status == 500
            assert client.breaker.state == "closed"

    asyncio.run(main())


def test_a_503_of_the_upstreams_own_is_returned_and_counts_as_failure():
    async def main() -> None:
        async with upstream() as url, client_for(url, breaker=dict(min_calls=2)) as client:
            assert (await client.request("GET", "/sick")).status == 503
            assert (await client.request("GET", "/sick")).status == 503
            assert client.breaker.state == "open"

    asyncio.run(main())


def test_a_cancelled_call_does_not_close_a_half_open_breaker():
    async def main() -> None:
        async with upstream() as url, client_for(url, breaker=dict(min_calls=1, reset_timeout=0.1, probes=1)) as client:
            await client.request("GET", "/sick")
            assert client.breaker.state == "open"
            await asyncio.sleep(0.15)
            with pytest.raises(asyncio.TimeoutError):  # the caller gives up on the trial call
                await asyncio.wait_for(client.request("GET", "/slow?seconds=3"), 0.05)
            assert client.breaker.state == "half-open"
            assert (await client.request("GET", "/echo")).status == 200  # the next caller is the trial
            assert client.breaker.state == "closed"

    asyncio.run(main())


class DropsFirstConnection:
    """A raw HTTP server that hangs up on its first connection without answering, then answers 200."""

    def __init__(self) -> None:
        self.connections = 0
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        if self.connections > 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                         b"Connection: close\r\n\r\n{}")
            await writer.drain()
        writer.close()

    async def __aenter__(self) -> "DropsFirstConnection":
        self._server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_) -> None:
        self._server.close()
        await self._server.wait_closed()


def test_get_is_retried_once_after_a_connection_error():
    async def main() -> None:
        async with DropsFirstConnection() as server, client_for(server.url) as client:
            assert (await client.request("GET", "/bags")).status == 200
            assert server.connections == 2

    asyncio.run(main())


def test_post_is_not_retried_unless_marked_safe():
    async def main() -> None:
        async with DropsFirstConnection() as server, client_for(server.url) as client:
            with pytest.raises(UpstreamUnavailable):
                await client.request("POST", "/scans/parent", json={"qr_id": "SB00001"})
            assert server.connections == 1
        async with DropsFirstConnection() as server, client_for(server.url) as client:
            # A write carrying an idempotency key may be marked safe to repeat.
            assert (await client.request("POST", "/scans/parent", json={}, retry=True)).status == 200
            assert server.connections == 2

    asyncio.run(main())


def test_a_5xx_blaming_a_dependency_does_not_open_the_breaker():
    """A service that answers 503 because *its* dependency is down is itself healthy: one dead billing must not
    make the gateway refuse every scanning route."""

    async def scenario():
        async with upstream() as url, client_for(url, breaker=dict(min_calls=2)) as client:
            for _ in range(5):
                response = await client.request("GET", "/dependency-down")
                assert response.status == 503
            assert client.breaker.state == "closed"
            for _ in range(5):
                await client.request("GET", "/sick")
            assert client.breaker.state == "open"

    asyncio.run(scenario())


def test_failures_raised_here_name_the_upstream_for_the_next_caller():
    async def scenario():
        async with client_for(f"http://127.0.0.1:{free_port()}", retries=0) as client:
            with pytest.raises(UpstreamUnavailable) as caught:
                await client.request("GET", "/anything")
            assert caught.value.headers["X-Dependency-Failure"] == "up" and caught.value.headers["Retry-After"]

    asyncio.run(scenario())


def test_a_502_from_the_balancer_is_retried_for_safe_calls_and_keyed_writes_only():
    """nginx answers 502 when the replica it picked broke the connection mid-request; it never passes a POST on."""
    calls = []

    async def flaky(request: web.Request) -> web.Response:
        calls.append(request.method)
        if len(calls) % 2 == 1:
            return web.json_response({"detail": "upstream prematurely closed connection"}, status=502)
        return web.json_response({"ok": True})

    async def main() -> None:
        async with upstream([web.get("/x", flaky), web.post("/x", flaky)]) as url, client_for(url) as client:
            assert (await client.request("GET", "/x")).status == 200
            assert (await client.request("POST", "/x", json={}, retry=True)).status == 200
            assert len(calls) == 4
            assert (await client.request("POST", "/x", json={})).status == 502  # unkeyed: it may have landed
            assert len(calls) == 5

    asyncio.run(main())


def test_unkeyed_writes_never_ride_a_kept_alive_connection():
    """A connection the other side closes as a write is sent on it could only fail: such writes get their own."""
    peers = []

    async def peer(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1])
        return web.json_response({})

    async def main() -> None:
        async with upstream([web.get("/p", peer), web.post("/p", peer)]) as url, client_for(url) as client:
            for _ in range(3):
                await client.request("GET", "/p")
            for _ in range(3):
                await client.request("POST", "/p", json={}, retry=True)
            reused = set(peers)
            for _ in range(3):
                await client.request("POST", "/p", json={})
        assert len(reused) == 1  # safe calls and keyed writes share one kept-alive connection
        assert len(set(peers[6:])) == 3 and not set(peers[6:]) & reused

    asyncio.run(main())


def test_pools_older_than_max_age_are_replaced_without_cutting_what_they_carry():
    """UPSTREAM_CONNECTION_MAX_AGE: behind a per-connection balancer, new connections are what reach new replicas."""
    peers = []

    async def peer(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1])
        await asyncio.sleep(float(request.query.get("seconds", 0)))
        return web.json_response({})

    async def main() -> None:
        async with upstream([web.get("/p", peer)]) as url, client_for(url, max_age=0.2) as client:
            await client.request("GET", "/p")
            await client.request("GET", "/p")
            slow = asyncio.create_task(client.request("GET", "/p", params={"seconds": "0.5"}))
            await asyncio.sleep(0.3)
            await client.request("GET", "/p")  # a new pool: the slow call's still holds its connection
            assert (await slow).status == 200
            await asyncio.sleep(0.05)
            assert not client._retired  # the old pool closed once its last call was done
        assert peers[0] == peers[1] == peers[2] and peers[3] != peers[0]

    asyncio.run(main())


def test_retries_stay_within_the_retry_budget():
    """An upstream behind a balancer that answers every call 502: with a budget of 20% of calls and 3 saved up,
    100 calls are sent again 3 + 20 times at most, not 100 (a down upstream's load is not doubled); the refusals
    are counted. The jitter pauses each retry by up to its bound."""
    calls = []

    async def broken(request: web.Request) -> web.Response:
        calls.append(1)
        return web.json_response({"detail": "no live upstreams"}, status=502)

    async def main() -> tuple[float, float]:
        async with upstream([web.get("/x", broken)]) as url, client_for(
                url, retry_ratio=0.2, retry_burst=3, retry_jitter=0.01, breaker={"min_calls": 10_000}) as client:
            # The counters are the process's (labelled service/upstream): what these 100 calls add to them.
            before = client._retried._value.get(), client._refused_retry._value.get()
            for _ in range(100):
                assert (await client.request("GET", "/x")).status == 502
            return client._retried._value.get() - before[0], client._refused_retry._value.get() - before[1]

    retried, refused = asyncio.run(main())
    assert retried + refused == 100
    assert 20 <= retried <= 3 + 20, retried
    assert len(calls) == 100 + retried
