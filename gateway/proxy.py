"""The /api/v1 hot path as raw ASGI: cap the headers, resolve the route (public API only), check the token, cap the
body, stream the upstream's answer.

It bypasses FastAPI routing on purpose (shared.middleware.PrefixRoute hands it every /api/v1 request): a FastAPI
route costs ~3x a raw ASGI handler here (docs/performance.md), and the hop should cost as little as it can.
"""
from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote

import aiohttp

from prometheus_client import Counter, Gauge

from gateway.limits import Limit, Limiter, refusal_headers
from gateway.routes import API_PREFIX, resolve
from shared import deadline
from shared.errors import PROBLEM_JSON, ProblemError, Unauthorized, problem_body
from shared.http import ResilientClient
from shared.logging import request_id_var
from shared.security import TokenVerifier

log = logging.getLogger("bagtrack.gateway")

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"trailers", b"transfer-encoding", b"upgrade"})
# Request headers that describe only the client->gateway hop, or that the gateway writes itself.
# A client's X-Request-Budget-Ms is dropped: only the gateway sets a request's budget (shared/deadline.py).
_REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"expect", b"x-request-id", b"x-forwarded-for",
                              b"x-forwarded-proto", deadline.RAW_HEADER}
# Response headers the gateway's own server (or middleware) writes: passing them on would duplicate them.
_RESPONSE_DROP = HOP_BY_HOP | {b"x-request-id", b"date", b"server"}
_PREFIX_LEN = len(API_PREFIX)
_RAW_PREFIX = API_PREFIX.encode() + b"/"
_CLOSE = {"Connection": "close"}

UPSTREAM_IN_FLIGHT = Gauge("bagtrack_upstream_in_flight", "Requests in flight from this gateway to an upstream "
                           "(its bulkhead counts these; event streams excluded)", ["upstream"])
BULKHEAD_CAP = Gauge("bagtrack_bulkhead_capacity", "The bulkhead's cap on requests in flight to an upstream",
                     ["upstream"])
BULKHEAD_REJECTED = Counter("bagtrack_bulkhead_rejected_total",
                            "Requests answered 503 at once because their upstream's bulkhead was full", ["upstream"])


class BodyTooLarge(Exception):
    """The request body passed the configured limit."""


class HeaderTooLarge(ProblemError):
    """A request header, or all of them together, past the gateway's limits (RFC 6585 431)."""

    status = 431
    slug = "request-header-fields-too-large"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers=dict(_CLOSE))


class BodyStalled(Exception):
    """No part of the request body arrived for `body_stall_timeout` seconds."""


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class Proxy:
    """Forwards the public API's routes under /api/v1 to the owning upstream; clients and auth are attached by the
    app lifespan."""

    def __init__(self, max_body_bytes: int, *, max_header_bytes: int = 8 * 1024,
                 max_headers_total_bytes: int = 32 * 1024, max_authorization_bytes: int = 4 * 1024,
                 body_stall_timeout: float = 30.0, stream_read_timeout: float = 60.0,
                 rate_limits: bool = True, bulkheads: dict[str, int] | None = None,
                 request_budget: float | None = None) -> None:
        self.max_body_bytes = max_body_bytes
        self.stream_read_timeout = stream_read_timeout
        self.body_stall_timeout = body_stall_timeout
        self.max_header_bytes = max_header_bytes
        self.max_headers_total_bytes = max_headers_total_bytes
        self.max_authorization_bytes = max_authorization_bytes
        self.rate_limits = rate_limits
        self.request_budget = request_budget
        # Bulkheads: requests in flight to each upstream and the cap (one event loop: plain counters suffice).
        self.caps = dict(bulkheads or {})
        self.in_flight = dict.fromkeys(self.caps, 0)
        self._in_flight_gauge = {name: UPSTREAM_IN_FLIGHT.labels(name) for name in self.caps}
        self._rejected = {name: BULKHEAD_REJECTED.labels(name) for name in self.caps}
        for name, cap in self.caps.items():
            BULKHEAD_CAP.labels(name).set(cap)
        self.clients: dict[str, ResilientClient] | None = None
        self.auth: TokenVerifier | None = None
        self.limiter: Limiter | None = None

    async def attach(self, app) -> None:
        """Start forwarding with the app's clients, token verifier and rate limits (a start-up hook)."""
        self.clients, self.auth = app.state.clients, app.state.verifier
        settings = app.state.settings
        if self.rate_limits:
            self.limiter = Limiter(
                app.state.cache,
                read=Limit("read", settings.rate_read_per_second, settings.rate_read_burst),
                write=Limit("write", settings.rate_write_per_second, settings.rate_write_burst),
                anonymous=Limit("anonymous", settings.rate_anonymous_per_second, settings.rate_anonymous_burst))

    async def __call__(self, scope, receive, send) -> None:
        # Headers first: before the route, the token check (and its memo) and anything forwarded.
        refused = self._check_headers(scope["headers"])
        if refused is not None:
            return await send_problem(send, refused.status, refused.detail, slug=refused.slug, headers=refused.headers)
        path = scope["path"][_PREFIX_LEN:]
        method = scope["method"]
        route = resolve(method, path)
        if route is None:
            # Not on the allow-list (gateway.routes.PUBLIC_API): unknown, or a service-to-service route.
            return await send_problem(send, 404, f"no route of the public API serves {method} {scope['path']}",
                                      slug="not-found")
        scope["route_template"] = route.template
        clients, auth = self.clients, self.auth
        if clients is None or auth is None:
            return await send_problem(send, 503, "gateway is starting", slug="service-unavailable",
                                      headers={"Retry-After": "1"})

        forward, content_length, chunked = upstream_headers(scope)
        user_id = None
        if not route.public:
            try:
                user_id = (await auth.authenticate(forward.get("authorization"))).user_id
            except ProblemError as exc:
                return await send_problem(send, exc.status, exc.detail, slug=exc.slug, headers=exc.headers)
        if self.limiter is not None:
            # After the token check (a bad token is a 401, not a count against anyone), before the body is read.
            client = scope.get("client")
            limit, decision = await self.limiter.check(method, user_id, client[0] if client else None)
            if not decision.allowed:
                who = "this user" if user_id is not None else "this address"
                headers = refusal_headers(decision)
                return await send_problem(
                    send, 429, f"rate limit for {who} passed ({limit.name}: {limit.per_second:g}/s, burst "
                    f"{limit.burst}); retry in {headers['Retry-After']} s", slug="rate-limited", headers=headers)

        body = None
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                return await send_problem(send, 400, "invalid Content-Length", slug="bad-request", headers=_CLOSE)
            if declared > self.max_body_bytes:
                return await self._too_large(send)
        if chunked or (content_length is not None and content_length != b"0"):
            try:
                body = await read_body(receive, self.max_body_bytes, stall=self.body_stall_timeout)
            except BodyTooLarge:
                return await self._too_large(send)
            except BodyStalled:
                # A slow-loris body holds a connection and a task: cut it off (the rest would never be parsed).
                return await send_problem(send, 408, f"request body stalled for {self.body_stall_timeout:g} s",
                                          slug="request-timeout", headers=_CLOSE)
            except ClientGone:
                return

        target = upstream_target(scope, path)
        # A write that carries an idempotency key may be retried safely when the connection fails.
        retry = True if "idempotency-key" in forward or carries_key(body, route.body_key) else None
        timeout = self.stream_read_timeout if route.stream else None
        if self.request_budget and not route.stream:
            deadline.start(self.request_budget)  # sent on by the client below, in X-Request-Budget-Ms
        name = route.upstream
        counted = not route.stream and name in self.caps
        if counted:
            if self.in_flight[name] >= self.caps[name]:
                self._rejected[name].inc()
                return await send_problem(send, 503, f"{name} already has {self.caps[name]} requests in flight from "
                                          "this gateway; retry shortly", slug="upstream-busy",
                                          headers={"Retry-After": "1"})
            self.in_flight[name] += 1
            self._in_flight_gauge[name].inc()
        try:
            async with clients[name].stream(method, target, headers=forward, data=body,
                                            retry=retry, timeout=timeout) as upstream:
                await relay(upstream, receive, send, name)
        except ProblemError as exc:
            await send_problem(send, exc.status, exc.detail, slug=exc.slug, headers=exc.headers)
        finally:
            if counted:
                self.in_flight[name] -= 1
                self._in_flight_gauge[name].dec()

    def _check_headers(self, headers) -> ProblemError | None:
        """431 (closing the connection) for one header or all of them past the limits; 401 for an oversize
        Authorization. None when the headers are fine.

        This bounds what the gateway keeps, verifies and forwards, not what it reads: uvicorn with httptools has
        parsed the whole header block before the app sees it (it sets no limit of its own). In the scaled
        deployment nginx in front bounds that with `large_client_header_buffers` (and `client_header_buffer_size`),
        answering 400/494 itself for a header line or block past its buffers.
        """
        per_header, total_limit = self.max_header_bytes, self.max_headers_total_bytes
        total = 0
        authorization = 0
        for name, value in headers:
            size = len(name) + len(value)
            if size > per_header:
                return HeaderTooLarge(f"a request header exceeds {per_header} bytes (name and value)")
            total += size
            if total > total_limit:
                return HeaderTooLarge(f"request headers exceed {total_limit} bytes in total")
            if name == b"authorization":
                authorization += len(value)
        if authorization > self.max_authorization_bytes:
            return Unauthorized(f"Authorization header exceeds {self.max_authorization_bytes} bytes")
        return None

    async def _too_large(self, send) -> None:
        # Close the connection: the unread rest of the body must not be parsed as the next request.
        await send_problem(send, 413, f"request body exceeds {self.max_body_bytes} bytes",
                           slug="payload-too-large", headers=_CLOSE)


def carries_key(body: bytes | None, field: str | None) -> bool:
    """Whether a JSON body names a non-empty idempotency key `field` (gateway.routes.BODY_KEYS). Parsed only when
    the name appears at all; anything unparsable is "no key" (the service answers it 422)."""
    if not body or field is None or field.encode() not in body:
        return False
    try:
        value = json.loads(body)
    except ValueError:
        return False
    return isinstance(value, dict) and isinstance(value.get(field), str) and bool(value[field])


def upstream_headers(scope) -> tuple[dict[str, str], bytes | None, bool]:
    """Headers to send upstream, plus the request's Content-Length (raw) and whether it is chunked."""
    forward: dict[str, str] = {}
    content_length = connection = None
    chunked = False
    for name, value in scope["headers"]:
        if name in _REQUEST_DROP:
            if name == b"content-length":
                content_length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"connection":
                connection = value
            continue
        key, text = name.decode("latin-1"), value.decode("latin-1")
        seen = forward.get(key)
        # A repeated header is one comma-separated list (RFC 9110 5.3); cookies join with "; ".
        forward[key] = text if seen is None else seen + ("; " if key == "cookie" else ", ") + text
    if connection:  # names listed in Connection are hop-by-hop too
        for token in connection.decode("latin-1").split(","):
            forward.pop(token.strip().lower(), None)

    forward["x-request-id"] = scope.get("state", {}).get("request_id") or request_id_var.get() or ""
    client = scope.get("client")
    if client:
        # Only the client the gateway resolved (shared.proxies): a chain from an untrusted peer is forged, and
        # the trusted proxies in front of the gateway are nothing the services need to know.
        forward["x-forwarded-for"] = client[0]
    forward["x-forwarded-proto"] = scope.get("scheme", "http")
    # Else aiohttp asks for gzip, and (auto-decompress off) the client would get bytes it never asked for.
    forward.setdefault("accept-encoding", "identity")
    return forward, content_length, chunked


def upstream_target(scope, path: str) -> str:
    """The service-side path (still percent-encoded as the client sent it) and query string."""
    raw_path = scope.get("raw_path")
    target = raw_path[_PREFIX_LEN:].decode("latin-1") if raw_path and raw_path.startswith(_RAW_PREFIX) else quote(path)
    query = scope["query_string"]
    return f"{target}?{query.decode('latin-1')}" if query else target


async def read_body(receive, limit: int, *, stall: float = 30.0) -> bytes:
    """The whole request body, refused as soon as it passes `limit` bytes or no part of it comes for `stall` s."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            async with asyncio.timeout(stall):
                message = await receive()
        except TimeoutError:
            raise BodyStalled from None
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def relay(upstream: aiohttp.ClientResponse, receive, send, name: str) -> None:
    """Send the upstream's status, end-to-end headers and body to the client, chunk by chunk as it arrives."""
    headers = [(k, v) for k, v in upstream.raw_headers if k.lower() not in _RESPONSE_DROP]
    await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
    content = upstream.content
    watcher = None
    try:
        chunk = await content.readany()
        while chunk:
            if content.at_eof():  # the common small response: one body message, no watcher
                await send({"type": "http.response.body", "body": chunk})
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if watcher is None:
                # A long stream (a CSV export) stops when its client leaves; uvicorn's send() would not tell us.
                watcher = asyncio.ensure_future(_disconnected(receive))
            elif watcher.done():
                return
            chunk = await content.readany()
        await send({"type": "http.response.body", "body": b""})
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        # Headers are gone already: leave the response incomplete so the client sees a broken body,
        # never a silently truncated one that looks whole.
        log.warning("upstream %s broke off its response: %s", name, type(exc).__name__)
    finally:
        if watcher is not None:
            watcher.cancel()


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_problem(send, status: int, detail: str, *, slug: str, headers: dict[str, str] | None = None) -> None:
    """Answer with an RFC 9457 problem document (with the request id) from raw ASGI."""
    body = json.dumps(problem_body(status, detail, slug=slug)).encode()
    raw = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
