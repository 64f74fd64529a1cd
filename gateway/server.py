"""The gateway's HTTP server: uvicorn with an edge of its own, on two listening sockets (public and ops).

uvicorn has no header-read timeout and no cap on open connections (its --limit-concurrency answers 503 per
request, counting tasks too, so it would also refuse long streams and the readiness probe). GatewayProtocol adds
both, per connection, plus a bound on the raw header block so a 1 MB header is never buffered whole.
"""
from __future__ import annotations

import json
import socket
from asyncio import TimerHandle
from dataclasses import dataclass

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.app import create_app
from gateway.config import GatewaySettings
from shared.drain import DrainingServer
from shared.errors import PROBLEM_JSON, problem_body
from shared.metrics import OPEN_CONNECTIONS, REFUSED_CONNECTIONS
from shared.serve import TIMEOUT_GRACEFUL_SHUTDOWN, TIMEOUT_KEEP_ALIVE

_CONTENT_TYPE = b"content-type: " + PROBLEM_JSON.encode() + b"\r\n"
# How long a refused connection stays half-open after its answer, reading and dropping what the client still sends:
# closing a socket with unread input resets the connection, and the reset can destroy the answer before it is read.
LINGER = 1.0
# TIMEOUT_KEEP_ALIVE is above the idle timeouts of the gateway's clients (nginx upstream keepalive 60 s), so none
# reuses a connection the gateway is closing; the same values the services run with (shared/serve.py).


@dataclass
class Edge:
    """The limits one server's connections share, and how many public connections are open."""

    header_timeout: float
    max_connections: int
    max_head_bytes: int
    ops_port: int
    open: int = 0


class GatewayConfig(uvicorn.Config):
    """uvicorn's Config plus the edge its protocol instances read (the protocol is built with the config only)."""

    def __init__(self, *args, edge: Edge, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.edge = edge


class GatewayProtocol(HttpToolsProtocol):
    """httptools' protocol with a header timeout, the open-connection cap (public port only) and a header block
    bound. The timer runs from the connection's opening, and on a kept-alive connection from a later request's
    first byte, until its headers are complete: idle time between requests stays the keep-alive timeout's, and
    once the headers are in nothing here cuts the request or its (streamed) response."""

    config: GatewayConfig

    def __init__(self, config: GatewayConfig, server_state, app_state, _loop=None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.edge = config.edge
        self.header_timer: TimerHandle | None = None
        self.header_deadline = 0.0
        self.in_head = False  # a request has begun and its headers are not complete
        self.head_bytes = 0
        self.counted = False
        self.refused = False  # answered by the protocol itself: the rest of the input is dropped
        self.open_gauge = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        edge = self.edge
        ops = self.server is not None and self.server[1] == edge.ops_port
        if not ops:
            if edge.open >= edge.max_connections:
                REFUSED_CONNECTIONS.labels("gateway").inc()
                return self._answer(503, f"the gateway holds {edge.max_connections} open connections",
                                    slug="service-unavailable", extra=b"retry-after: 1\r\n")
            edge.open += 1
            self.counted = True
        self.open_gauge = OPEN_CONNECTIONS.labels("gateway", "ops" if ops else "public")
        self.open_gauge.inc()
        self.header_deadline = self.loop.time() + edge.header_timeout
        self.header_timer = self.loop.call_at(self.header_deadline, self._header_timeout)

    def connection_lost(self, exc) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        if self.open_gauge is not None:
            self.open_gauge.dec()
            self.open_gauge = None
        if self.counted:
            self.edge.open -= 1
            self.counted = False
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        super().data_received(data)
        if not self.in_head or self.transport.is_closing():
            return
        # The headers are still incomplete after this chunk. Most requests never get here (one read holds them);
        # the timer of a later request is armed only now, so a request that arrives whole costs none.
        self.head_bytes += len(data)
        if self.head_bytes > self.edge.max_head_bytes:
            self._answer(431, f"request headers exceed {self.edge.max_head_bytes} bytes",
                         slug="request-header-fields-too-large")
        elif self.header_timer is None:
            self.header_timer = self.loop.call_at(self.header_deadline, self._header_timeout)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.head_bytes = True, 0
        if self.header_timer is None:  # a later request: its own time, from its first byte
            self.header_deadline = self.loop.time() + self.edge.header_timeout

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        super().on_headers_complete()

    def _header_timeout(self) -> None:
        self.header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request behind a response still being sent: never cut that response; wait again.
            self.header_deadline = self.loop.time() + self.edge.header_timeout
            self.header_timer = self.loop.call_at(self.header_deadline, self._header_timeout)
        elif self.in_head:
            self._answer(408, f"request headers not complete within {self.edge.header_timeout:g} s",
                         slug="request-timeout")
        else:  # a fresh connection that never sent a byte: nobody to answer
            self.transport.close()

    def _answer(self, status: int, detail: str, *, slug: str, extra: bytes = b"") -> None:
        """A problem document written straight to the socket (there is no request for the app), then the end of
        the connection: our side at once, the socket once the client closes its side or after LINGER."""
        body = json.dumps(problem_body(status, detail, slug=slug)).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [_CONTENT_TYPE, b"content-length: %d\r\n" % len(body), extra, b"connection: close\r\n\r\n", body]
        self.transport.write(b"".join(head))
        self.transport.write_eof()
        self.refused = True
        if self.header_timer is not None:
            self.header_timer.cancel()
        self.header_timer = self.loop.call_later(LINGER, self.transport.close)


def listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket (uvicorn's create_server listens on it); port 0 picks a free one."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def serve(host: str, port: int, settings: GatewaySettings | None = None) -> None:
    """One app, one lifespan, two sockets: the public port and the ops port (settings.ops_host/ops_port)."""
    settings = settings or GatewaySettings()
    public, ops = listen(host, port), listen(settings.ops_host, settings.ops_port)
    # The app tells the ports apart by the request's local port (scope["server"]): the one actually bound.
    settings = settings.model_copy(update={"ops_port": ops.getsockname()[1]})
    DrainingServer(gateway_config(settings, host, public.getsockname()[1])).run(sockets=[public, ops])


def gateway_config(settings: GatewaySettings, host: str, port: int) -> GatewayConfig:
    """What the services get on uvicorn's command line (uvloop, no access log, no proxy headers: shared/proxies.py
    is the one rule for client addresses), plus the edge; `host`/`port` only name the public socket in logs."""
    edge = Edge(header_timeout=settings.header_timeout, max_connections=settings.max_client_connections,
                max_head_bytes=2 * settings.max_headers_total_bytes, ops_port=settings.ops_port)
    return GatewayConfig(lambda: create_app(settings), factory=True, host=host, port=port, loop="uvloop",
                         http=GatewayProtocol, proxy_headers=False, access_log=False,
                         timeout_graceful_shutdown=TIMEOUT_GRACEFUL_SHUTDOWN, timeout_keep_alive=TIMEOUT_KEEP_ALIVE,
                         edge=edge)
