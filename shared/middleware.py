"""Pure-ASGI middleware: X-Request-ID, metrics by route template, one JSON access-log line, the one 500 for
anything unhandled; and PrefixRoute, which hands a path prefix to a raw ASGI handler before routing."""
from __future__ import annotations

import json
import logging
import os
import re
import time

from shared import deadline
from shared.errors import PROBLEM_JSON, problem_body
from shared.logging import request_id_var
from shared.metrics import IN_FLIGHT, LATENCY, REQUESTS

access_log = logging.getLogger("bagtrack.access")
error_log = logging.getLogger("bagtrack.errors")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUIET_PATHS = frozenset({"/health", "/metrics", "/ready"})


def incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID when it is sane, else a fresh one."""
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _VALID_REQUEST_ID.match(candidate):
                return candidate
            break
    return os.urandom(16).hex()


class RequestContextMiddleware:
    def __init__(self, app, *, service: str, access_log_enabled: bool = True, trust_deadline: bool = True) -> None:
        self.app = app
        # Services take the deadline their caller sent (shared.deadline); the gateway sets its own instead.
        self.trust_deadline = trust_deadline
        self.service = service
        self.access_log_enabled = access_log_enabled
        self._series: dict[tuple[str, str, int], tuple] = {}  # (method, route, status) -> its metric children

    def _metrics(self, method: str, template: str, status: int) -> tuple:
        """The latency histogram and request counter of one (method, route, status): looked up once."""
        key = (method, template, status)
        series = self._series.get(key)
        if series is None:
            series = (LATENCY.labels(self.service, method, template),
                      REQUESTS.labels(self.service, method, template, str(status)))
            self._series[key] = series
        return series

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope["headers"])
        request_id_var.set(request_id)
        if self.trust_deadline:
            deadline.from_headers(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        status = 500
        started = False
        start = time.perf_counter()

        async def send_with_id(message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        gauge = IN_FLIGHT.labels(self.service)
        gauge.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            error_log.exception("unhandled error")
            if not started:
                body = json.dumps(problem_body(500, "internal error", slug="internal-error")).encode()
                await send_with_id({"type": "http.response.start", "status": 500,
                                    "headers": [(b"content-type", PROBLEM_JSON.encode()),
                                                (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
        finally:
            gauge.dec()
            elapsed = time.perf_counter() - start
            # Routers set scope["route"]; a non-FastAPI handler (the gateway's proxy) sets "route_template".
            template = scope.get("route_template") or getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            latency, requests = self._metrics(method, template, status)
            latency.observe(elapsed)
            requests.inc()
            if self.access_log_enabled and scope["path"] not in _QUIET_PATHS:
                access_log.info(
                    "%s %s %d", method, scope["path"], status,
                    extra={"fields": {"method": method, "route": template, "status": status,
                                      "duration_ms": round(elapsed * 1000, 2)}},
                )


class PrefixRoute:
    """Every request under `prefix` goes to `handler` (raw ASGI), the rest to the app: the gateway's /api/v1 hot
    path skips FastAPI's routing, which costs ~3x a raw ASGI handler here (docs/performance.md)."""

    def __init__(self, app, *, prefix: str, handler) -> None:
        self.app, self.prefix, self.handler = app, prefix, handler

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.handler(scope, receive, send)
        else:
            await self.app(scope, receive, send)
