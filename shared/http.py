"""The resilient HTTP client for calls between services: timeouts, a circuit breaker, header forwarding.

Built on aiohttp, not httpx: as a forwarding client httpx's own transport measured 5-8x slower on these
machines and degraded at 100 connections (docs/performance.md; bench/gateway_hop.py re-measures it).
The session is created in the app lifespan (aiohttp needs a running loop) and closed on shutdown.
"""
from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import random
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Mapping

import aiohttp

from shared import deadline
from shared.breaker import CircuitBreaker, CircuitOpen
from shared.deadline import DeadlineExceeded
from shared.errors import DEPENDENCY_FAILURE_HEADER, DependencyUnavailable, ProblemError
from shared.logging import request_id_var
from shared.metrics import BREAKER_STATE, UPSTREAM_LATENCY, UPSTREAM_RETRIES

log = logging.getLogger("bagtrack.http")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The answers that say the upstream itself is sick (overloaded, or a proxy in front of it found nothing) —
# unless it names a dependency of its own in X-Dependency-Failure: then the upstream is well and says so.
# A 500 is a bug one request can trigger (a NUL byte once did): logged and alerted on, never an outage.
SICK_STATUSES = frozenset({502, 503, 504})


class UpstreamUnavailable(DependencyUnavailable):
    slug = "upstream-unavailable"

    def __init__(self, detail: str, *, upstream: str, retry_after: int = 2) -> None:
        super().__init__(detail, dependency=upstream, retry_after=retry_after)


class UpstreamTimeout(ProblemError):
    status, slug = 504, "upstream-timeout"

    def __init__(self, detail: str, *, upstream: str) -> None:
        super().__init__(detail, headers={DEPENDENCY_FAILURE_HEADER: upstream})


@dataclass
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return jsonlib.loads(self.body)


class ResilientClient:
    """One upstream: a base URL, a connection pool, a timeout budget and a breaker shared by all callers."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        service: str,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        max_connections: int = 200,
        breaker: dict | None = None,
        retries: int = 1,
        max_age: float = 0.0,
        retry_ratio: float = 0.2,
        retry_burst: int = 100,
        retry_jitter: float = 0.02,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.service = service
        self.timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=timeout)
        self.max_connections = max_connections
        self.retries = retries
        # The retry budget: each call earns `retry_ratio` of a retry, up to `retry_burst` saved; a retry spends one.
        # So retries stay a fraction of traffic — when an upstream is really down they stop at once instead of
        # doubling its load — while a restart's handful of broken connections is always retried.
        self.retry_ratio, self.retry_burst, self.retry_jitter = retry_ratio, retry_burst, retry_jitter
        self._retry_tokens = float(retry_burst)
        self._retried = UPSTREAM_RETRIES.labels(service, name, "retried")
        self._refused_retry = UPSTREAM_RETRIES.labels(service, name, "over_budget")
        gauge = BREAKER_STATE.labels(service, name)
        self.breaker = CircuitBreaker(
            name, **(breaker or {}),
            on_state_change=lambda old, new: (gauge.set(0 if new == "closed" else 1),
                                              log.warning("breaker %s: %s -> %s", name, old, new)),
        )
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None
        # Connection age (UPSTREAM_CONNECTION_MAX_AGE; 0: off): behind a per-connection balancer (a Kubernetes
        # Service) kept-alive connections pin a caller to the replicas it first reached, and a new replica would
        # see none of its traffic. Every max_age seconds the pool is replaced by a new one (new connections,
        # balanced afresh); the old one is closed once the requests it carries are done.
        self.max_age = max_age
        self._born = 0.0
        self._in_flight: dict[aiohttp.ClientSession, int] = {}
        self._retired: set[aiohttp.ClientSession] = set()
        self._closing: set[asyncio.Task] = set()

    @classmethod
    def from_settings(cls, name: str, base_url: str, settings) -> "ResilientClient":
        """The client to `name` that a process's settings describe (timeouts, pool size, breaker)."""
        return cls(name, base_url, service=settings.service_name, timeout=settings.upstream_timeout,
                   connect_timeout=settings.connect_timeout, max_connections=settings.max_connections,
                   breaker=settings.breaker_options(), max_age=settings.upstream_connection_max_age,
                   retry_ratio=settings.upstream_retry_ratio, retry_burst=settings.upstream_retry_burst,
                   retry_jitter=settings.upstream_retry_jitter)

    async def start(self) -> None:
        if self._session is None:
            self._session, self._born = self._pooled(), time.monotonic()
            # Writes that may not be repeated go on a connection of their own, opened for them: a kept-alive
            # connection can be closed by the other side just as a request is sent on it (nginx closes its idle
            # connections when it reloads, a process when it drains), and such a write could only fail, never be
            # sent again. A new connection is ~0.1 ms on loopback; safe calls and keyed writes keep the pool
            # (they are retried instead).
            self._fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.max_connections,
                                                                               force_close=True),
                                                timeout=self.timeout, cookie_jar=aiohttp.DummyCookieJar(),
                                                auto_decompress=False, skip_auto_headers=("User-Agent",))

    def _pooled(self) -> aiohttp.ClientSession:
        # Idle connections are dropped after 15 s, well before the servers' 75 s keep-alive, so we never reuse a
        # connection the server is closing. The DNS cache is as long as a pool may live (a Kubernetes Service
        # name is one stable address; compose callers go through the internal nginx).
        connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=self.max_connections,
                                         ttl_dns_cache=300, keepalive_timeout=15)
        # No cookie jar: one session carries every caller's requests, so a Set-Cookie from an upstream must never
        # ride along on somebody else's next request (and jar bookkeeping costs per request).
        return aiohttp.ClientSession(connector=connector, timeout=self.timeout, cookie_jar=aiohttp.DummyCookieJar(),
                                     auto_decompress=False, skip_auto_headers=("User-Agent",))

    async def _may_retry(self) -> bool:
        """Spend one retry from the budget, after a short random pause (jitter: callers that failed together do
        not all come back in the same millisecond); False when the budget or the request's deadline is spent."""
        left = deadline.remaining()
        if self._retry_tokens < 1 or (left is not None and left <= self.retry_jitter):
            self._refused_retry.inc()
            return False
        self._retry_tokens -= 1
        self._retried.inc()
        if self.retry_jitter:
            await asyncio.sleep(random.uniform(0, self.retry_jitter))
        return True

    def _recycle(self) -> None:
        old, self._session, self._born = self._session, self._pooled(), time.monotonic()
        if old is not None:
            self._retired.add(old)
            self._release(old, 0)

    def _release(self, session: aiohttp.ClientSession, done: int = 1) -> None:
        left = self._in_flight.get(session, 0) - done
        self._in_flight[session] = left
        if left <= 0 and session in self._retired:
            self._retired.discard(session)
            del self._in_flight[session]
            task = asyncio.get_running_loop().create_task(session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for session in (self._session, self._fresh, *self._retired):
            if session is not None:
                await session.close()
        for task in list(self._closing):
            await task
        self._session = self._fresh = None
        self._retired.clear()
        self._in_flight.clear()

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Any = None,
        data: bytes | None = None,
        retry: bool | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a response whose body the caller reads; breaker and timeouts apply to getting its head.

        Connection failures are retried (`retries` times) only when the call is safe to repeat: a safe
        method, or `retry=True` for writes that carry an idempotency key. `timeout` replaces the client's read
        budget for this call (a caller that must answer sooner than the upstream's usual latency allows).
        """
        if self._session is None:
            await self.start()
        may_retry = (method in SAFE_METHODS) if retry is None else retry
        self._retry_tokens = min(self.retry_burst, self._retry_tokens + self.retry_ratio)
        attempts = 1 + (self.retries if may_retry else 0)
        if may_retry and self.max_age and time.monotonic() - self._born > self.max_age:
            self._recycle()
        session = self._session if may_retry else self._fresh
        self._in_flight[session] = self._in_flight.get(session, 0) + 1
        url = self.base_url + path
        outgoing = dict(headers or {})
        request_id = request_id_var.get()
        if request_id and "X-Request-ID" not in outgoing and "x-request-id" not in outgoing:
            outgoing["X-Request-ID"] = request_id
        left = deadline.remaining()
        if left is not None:
            # What is left of the request's budget (shared.deadline): sent on, and never waited past.
            if left <= 0:
                self._release(session)
                raise DeadlineExceeded()
            outgoing[deadline.HEADER] = deadline.header_value(left)
            timeout = min((self.timeout.sock_read or left) if timeout is None else timeout, left)
        budget = self.timeout if timeout is None else aiohttp.ClientTimeout(
            total=None, connect=min(self.timeout.connect or timeout, timeout), sock_read=timeout)
        start = time.perf_counter()
        outcome = "error"
        try:
            for attempt in range(attempts):
                try:
                    self.breaker.before_call()
                except CircuitOpen as exc:
                    outcome = "breaker_open"
                    raise UpstreamUnavailable(f"{self.name} is unavailable (circuit open)", upstream=self.name,
                                              retry_after=max(1, round(exc.retry_after))) from None
                try:
                    response = await session.request(method, url, headers=outgoing, params=params, data=data,
                                                           allow_redirects=False, timeout=budget)
                except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
                    self.breaker.record_failure()
                    # A connect timeout means "unreachable" (503, retryable), not "slow to answer" (504).
                    if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, aiohttp.ConnectionTimeoutError):
                        outcome = "timeout"
                        raise UpstreamTimeout(f"{self.name} did not answer in time", upstream=self.name) from exc
                    if attempt + 1 < attempts and await self._may_retry():
                        log.info("retrying %s %s after %s", method, url, type(exc).__name__)
                        continue
                    outcome = "unreachable"
                    raise UpstreamUnavailable(f"{self.name} is unreachable", upstream=self.name) from exc
                except asyncio.CancelledError:
                    # Says nothing of the upstream's health: a success here would reset the failure count
                    # and close a half-open breaker on a call that never finished.
                    self.breaker.record_cancelled()
                    raise
                if response.status == 502 and attempt + 1 < attempts and await self._may_retry():
                    # No bagtrack service answers 502 itself: it is a balancer in between (nginx) whose replica
                    # broke the connection mid-request. nginx passes a safe request on to the next replica by
                    # itself but never a POST; a keyed write is safe to send again, so it is, once.
                    self.breaker.record_failure()
                    response.release()
                    log.info("retrying %s %s after a 502 from the balancer", method, url)
                    continue
                if response.status in SICK_STATUSES and DEPENDENCY_FAILURE_HEADER not in response.headers:
                    self.breaker.record_failure()
                else:
                    self.breaker.record_success()
                outcome = str(response.status // 100) + "xx"
                try:
                    yield response
                finally:
                    response.release()
                return
        finally:
            self._release(session)
            UPSTREAM_LATENCY.labels(self.service, self.name, outcome).observe(time.perf_counter() - start)

    async def request(self, method: str, path: str, *, json: Any = None, **kwargs: Any) -> UpstreamResponse:
        """Send a request and read the whole (small) response body."""
        data = None
        headers = dict(kwargs.pop("headers", None) or {})
        if json is not None:
            data = jsonlib.dumps(json).encode()
            headers.setdefault("Content-Type", "application/json")
        async with self.stream(method, path, headers=headers, data=data, **kwargs) as response:
            try:
                body = await response.read()
            except asyncio.TimeoutError as exc:
                raise UpstreamTimeout(f"{self.name} did not answer in time", upstream=self.name) from exc
            except aiohttp.ClientError as exc:
                raise UpstreamUnavailable(f"{self.name} broke the connection", upstream=self.name) from exc
            return UpstreamResponse(response.status, dict(response.headers), body)


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's identity and request id, to pass on to another service."""
    out = {}
    for name in ("authorization", "x-request-id"):
        value = headers.get(name)
        if value:
            out[name] = value
    return out
