"""Prometheus metrics, labelled by route template (never the raw path, which would explode cardinality).

One process per replica, each scraped on its own /metrics: no multiprocess mode is needed because no
service runs several workers inside one replica (scale is by replicas, see README).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from fastapi import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

REQUESTS = Counter("bagtrack_http_requests_total", "HTTP requests handled", ["service", "method", "route", "status"])
LATENCY = Histogram(
    "bagtrack_http_request_duration_seconds",
    "Time to handle an HTTP request",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge("bagtrack_http_requests_in_flight", "Requests being handled", ["service"])
UPSTREAM_LATENCY = Histogram(
    "bagtrack_upstream_request_duration_seconds",
    "Time for a call to another service",
    ["service", "upstream", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10),
)
BREAKER_STATE = Gauge("bagtrack_circuit_breaker_open", "1 while a circuit breaker is open or half-open", ["service", "upstream"])
# Set by every readiness check (shared.health, gateway.ops), which the kubelet runs every few seconds: dependency is
# database or cache (Redis) for a service, each upstream service for the gateway.
DEPENDENCY_UP = Gauge("bagtrack_dependency_up", "1 if the last readiness check reached the dependency, else 0",
                      ["service", "dependency"])
# Counted where a request is refused with 429 (shared.ratelimit, services/auth/throttle.py); limit: the limit's name.
RATE_LIMITED = Counter("bagtrack_rate_limited_total", "Requests refused with 429 by a rate limit or failure throttle",
                       ["service", "limit"])
AUTH_LOCKOUTS = Counter("bagtrack_auth_lockouts_total", "Accounts locked by too many wrong passwords", ["service"])
UPSTREAM_RETRIES = Counter("bagtrack_upstream_retries_total",
                           "Calls to an upstream sent again (retried), or not because the retry budget or the "
                           "request's deadline was spent (over_budget)", ["service", "upstream", "outcome"])


def metrics_response() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
LOOP_LAG = Gauge("bagtrack_event_loop_lag_seconds", "How late the event loop ran a 100 ms timer, worst over the last second",
                 ["service"])
OPEN_CONNECTIONS = Gauge("bagtrack_http_connections_open", "Client connections open, by listening port (public, ops)",
                         ["service", "listener"])
REFUSED_CONNECTIONS = Counter("bagtrack_http_connections_refused_total",
                              "Client connections answered 503 at once: the open-connection cap was reached", ["service"])


class DatabasePools:
    """bagtrack_db_pool_connections{service, pool, state}, read from each SQLAlchemy pool when Prometheus scrapes:
    a checkout costs nothing more than it did. pool: primary or replica; state: in_use (checked out), idle (open,
    waiting in the pool), size (kept open), max (size + overflow: past it a checkout waits db_pool_timeout, then
    answers 503 database-busy)."""

    def __init__(self) -> None:
        self._engines: dict[tuple[str, str], tuple[AsyncEngine, int]] = {}

    def track(self, service: str, pool: str, engine: AsyncEngine, capacity: int) -> None:
        # The engine, not its pool: dispose() replaces an engine's pool with a new one.
        self._engines[(service, pool)] = (engine, capacity)

    def forget(self, *engines: AsyncEngine) -> None:
        """Stop reporting these engines (their database closed); others tracked since under the same names stay."""
        for key, (tracked, _) in list(self._engines.items()):
            if any(tracked is engine for engine in engines):
                del self._engines[key]

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for (service, name), (engine, capacity) in list(self._engines.items()):
            pool = engine.pool
            for state, value in (("in_use", pool.checkedout()), ("idle", pool.checkedin()), ("size", pool.size()),
                                 ("max", capacity)):
                family.add_metric([service, name, state], value)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("bagtrack_db_pool_connections", "Database connections of a pool, by state",
                                 labels=["service", "pool", "state"])


DB_POOLS = DatabasePools()
REGISTRY.register(DB_POOLS)
