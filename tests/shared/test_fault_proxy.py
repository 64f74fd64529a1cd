"""The TCP fault proxy the failure tests put between a service and its database or Redis (tests/support.py):
pass-through, latency, a blackhole, dropped connections, stopped and started again on the same port."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.support import TcpProxy


@pytest.fixture
def echo_proxy():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(65536), b"")],
                             daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    proxy = TcpProxy("127.0.0.1", server.getsockname()[1]).start()
    yield proxy
    proxy.close()
    server.close()


def _round_trip(port: int, timeout: float = 2.0) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.perf_counter()
        sock.sendall(b"ping")
        return sock.recv(4), time.perf_counter() - started


def test_pass_through_latency_and_back(echo_proxy):
    data, fast = _round_trip(echo_proxy.port)
    assert data == b"ping" and fast < 0.1
    echo_proxy.slow(0.15)
    data, slow = _round_trip(echo_proxy.port)
    assert data == b"ping" and slow >= 0.3  # once each way
    echo_proxy.slow(0)
    assert _round_trip(echo_proxy.port)[1] < 0.1


def test_blackhole_drop_and_stop(echo_proxy):
    echo_proxy.hang()
    with pytest.raises(socket.timeout):
        _round_trip(echo_proxy.port, timeout=0.3)
    echo_proxy.hang(False)
    sock = socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=2)
    sock.sendall(b"ping")
    assert sock.recv(4) == b"ping"
    echo_proxy.drop()  # the open connection is reset, new ones still work
    time.sleep(0.05)
    with pytest.raises(OSError):
        sock.sendall(b"ping")
        if not sock.recv(4):
            raise ConnectionResetError
    sock.close()
    assert _round_trip(echo_proxy.port)[0] == b"ping"
    echo_proxy.stop()
    with pytest.raises(OSError):
        _round_trip(echo_proxy.port)
    echo_proxy.start()
    assert _round_trip(echo_proxy.port)[0] == b"ping"
