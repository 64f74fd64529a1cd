"""Prometheus metrics, labelled by route template (never the raw path, which would explode cardinality).

One process per replica, each scraped on its own /metrics: no multiprocess mode is needed because no
service runs several workers inside one replica (scale is by replicas, see README).
"""
from __future__ import annotations

from fastapi import Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

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


def metrics_response() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
LOOP_LAG = Gauge("bagtrack_event_loop_lag_seconds", "How late the event loop ran a 100 ms timer, worst over the last second",
                 ["service"])
OPEN_CONNECTIONS = Gauge("bagtrack_http_connections_open", "Client connections open, by listening port (public, ops)",
                         ["service", "listener"])
REFUSED_CONNECTIONS = Counter("bagtrack_http_connections_refused_total",
                              "Client connections answered 503 at once: the open-connection cap was reached", ["service"])
