"""Slow and greedy clients at the gateway's own HTTP protocol (gateway/server.py), on raw sockets: the header
timeout (slowloris, silent connections, slow later requests; never a streamed response), the open-connection cap
(503 past it, the ops port exempt)."""
from __future__ import annotations

import re
import select
import socket
import time
from contextlib import ExitStack
from urllib.parse import urlsplit

import httpx
import pytest

from tests.gateway.conftest import Server
from tests.support import wait_for

HEADER_TIMEOUT = 1.0
CAP = 5


@pytest.fixture(scope="module")
def edge(start_gateway) -> Server:
    # The upstream timeout (a read timeout, 1 s elsewhere) must outlast the drip's pause past the header timeout.
    return start_gateway(GATEWAY_HEADER_TIMEOUT=str(HEADER_TIMEOUT), GATEWAY_MAX_CLIENT_CONNECTIONS=str(CAP),
                         UPSTREAM_TIMEOUT="5")


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length, read off a connection that may stay open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes the connection within `seconds` (nothing else is expected on it meanwhile)."""
    readable, _, _ = select.select([sock], [], [], seconds)
    return bool(readable) and sock.recv(65536) == b""


def dribble(sock: socket.socket, head: bytes, every: float = 0.3) -> bytes:
    """Send `head` one byte every `every` s (never finishing it) until the gateway answers; what it sent, to EOF."""
    for byte in head:
        readable, _, _ = select.select([sock], [], [], every)
        if readable:
            return read_until_closed(sock)
        try:
            sock.send(bytes([byte]))
        except OSError:  # closed under us: its answer is in the receive buffer
            return read_until_closed(sock)
    pytest.fail("the gateway never cut the dribbled headers off")


def assert_408(received: bytes) -> None:
    assert received.startswith(b"HTTP/1.1 408 "), received[:200]
    head, body = received.split(b"\r\n\r\n", 1)
    assert b"connection: close" in head.lower()
    assert b"content-type: application/problem+json" in head.lower()
    assert b'"type": "urn:bagtrack:problem:request-timeout"' in body


HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
ENDLESS_HEAD = b"GET /api/v1/bags HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000


def test_headers_dribbled_byte_by_byte_are_cut_with_408_near_the_timeout(edge):
    with connect(edge.url) as sock:
        started = time.monotonic()
        received = dribble(sock, ENDLESS_HEAD)
        elapsed = time.monotonic() - started
    assert_408(received)
    assert HEADER_TIMEOUT * 0.9 <= elapsed < 5, elapsed  # 1 s configured; the dribble alone would take 5 minutes


def test_a_fresh_connection_that_sends_nothing_is_closed_without_an_answer(edge):
    with connect(edge.url) as sock:
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert HEADER_TIMEOUT * 0.9 <= time.monotonic() - started < 5


def test_an_idle_kept_alive_connection_waits_but_a_slow_later_request_is_cut(edge):
    with connect(edge.url) as sock:
        sock.sendall(HEALTH)
        assert read_response(sock)[0] == 200
        # Idle between requests is the keep-alive timeout's (75 s), not the header timeout's.
        assert not closed_within(sock, HEADER_TIMEOUT * 1.5)
        sock.sendall(HEALTH)
        assert read_response(sock)[0] == 200
        started = time.monotonic()
        received = dribble(sock, ENDLESS_HEAD)
        assert time.monotonic() - started < 5
    assert_408(received)


def test_a_response_streaming_longer_than_the_header_timeout_is_not_cut(edge, auth, fake_upstream):
    with connect(edge.url) as sock:
        sock.sendall(f"GET /api/v1/bags/drip HTTP/1.1\r\nHost: x\r\nAuthorization: {auth['Authorization']}\r\n\r\n"
                     .encode())
        received = b""
        while b"first chunk" not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200 ")
        assert not closed_within(sock, HEADER_TIMEOUT * 1.5)  # the stream is still open past the header timeout
        assert httpx.post(fake_upstream.url + "/control/release", timeout=5).status_code == 200
        deadline = time.monotonic() + 5
        while b"second chunk" not in received and time.monotonic() < deadline:
            received += sock.recv(65536)
    assert b"second chunk" in received


def open_public_connections(gateway: Server) -> float:
    text = httpx.get(gateway.ops_url + "/metrics", timeout=5).text
    found = re.search(r'^bagtrack_http_connections_open\{listener="public",service="gateway"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def refused_connections(gateway: Server) -> float:
    text = httpx.get(gateway.ops_url + "/metrics", timeout=5).text
    found = re.search(r'^bagtrack_http_connections_refused_total\{service="gateway"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def assert_503_at_the_cap(received: bytes) -> None:
    assert received.startswith(b"HTTP/1.1 503 "), received[:200]
    head = received.split(b"\r\n\r\n", 1)[0].lower()
    assert b"retry-after: 1" in head and b"connection: close" in head
    assert b'"type": "urn:bagtrack:problem:service-unavailable"' in received


def test_past_the_connection_cap_a_connection_gets_503_and_the_ops_port_still_answers(edge):
    # The start-up probe's connection is gone.
    wait_for(lambda: open_public_connections(edge) == 0, 5, "no open public connection")
    refused_before = refused_connections(edge)
    with ExitStack() as held:
        kept = []
        for _ in range(CAP):
            sock = held.enter_context(connect(edge.url))
            sock.sendall(HEALTH)  # a request answered: past the header timeout it idles under keep-alive
            assert read_response(sock)[0] == 200
            kept.append(sock)
        assert open_public_connections(edge) == CAP

        with connect(edge.url) as silent:  # refused at once, before it sends anything
            assert_503_at_the_cap(read_until_closed(silent))
        with connect(edge.url) as asking:
            asking.sendall(HEALTH)
            assert_503_at_the_cap(read_until_closed(asking))
        assert refused_connections(edge) == refused_before + 2

        ready = httpx.get(edge.ops_url + "/ready", timeout=5)  # the readiness probe is not behind the cap
        assert ready.status_code == 200 and ready.json()["upstreams"]

        for sock in kept[:2]:
            sock.close()
        wait_for(lambda: open_public_connections(edge) == CAP - 2, 5, "two connections closed")
        assert httpx.get(edge.url + "/health", timeout=5).status_code == 200
