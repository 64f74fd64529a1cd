"""Liveness (no I/O, ever) and readiness (dependency pings with a short timeout), plus the metrics endpoint."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shared.drain import draining
from shared.metrics import DEPENDENCY_UP, metrics_response

router = APIRouter(tags=["ops"])

_HEALTH_BODY = b'{"status":"ok"}'
_HEALTH_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_HEALTH_BODY)).encode())]

ReadyCheck = tuple[str, Callable[[], Awaitable[None]], bool]  # (name, ping that raises on failure, critical?)


class LivenessFastPath:
    """Answers `GET /health` before any routing: liveness must be the cheapest request there is, so it stays
    fast while the process is busy (a probe that times out under load restarts a healthy replica). It does no
    I/O, so a slow database never gets a process restarted."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/health" and scope["method"] in ("GET", "HEAD"):
            scope["route_template"] = "/health"
            await send({"type": "http.response.start", "status": 200, "headers": _HEALTH_HEADERS})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else _HEALTH_BODY})
            return
        await self.app(scope, receive, send)


async def dependency_readiness(request: Request) -> tuple[bool, dict]:
    """Ready while the process can take requests; the database and cache are pinged (each on a connection of
    its own, never the request pool's) and reported, with the database's breaker.

    A dead database answers 200 with status "degraded", not 503: every replica shares that database, so
    failing readiness would pull all of them out of their load balancer and turn "the database is down" into
    "the service is gone" — while cached lookups could still be answered, and writes get a fast 503 from the
    database breaker. `?strict=true` answers 503 instead, for deploy checks that need everything up.
    """
    app = request.app
    timeout = app.state.settings.ready_timeout
    checks = app.state.ready_checks
    results = await asyncio.gather(*(_run_check(ping, timeout) for _, ping, _ in checks))
    service = app.state.settings.service_name
    for (name, _, _), result in zip(checks, results):
        DEPENDENCY_UP.labels(service, name).set(result == "ok")
    healthy = all(result == "ok" for (_, _, critical), result in zip(checks, results) if critical)
    body = {"status": "ready" if healthy else "degraded",
            "checks": {name: r for (name, _, _), r in zip(checks, results)}}
    db = getattr(app.state, "db", None)
    if db is not None:
        body["database_breaker"] = db.breaker.state
    strict = request.query_params.get("strict", "").lower() in ("1", "true", "yes")
    return healthy or not strict, body


async def _run_check(ping: Callable[[], Awaitable[None]], timeout: float) -> str:
    try:
        async with asyncio.timeout(timeout):
            await ping()
        return "ok"
    except TimeoutError:
        return f"timeout after {timeout}s"
    except Exception as exc:  # the reason is the point of the check
        return f"error: {type(exc).__name__}"


@router.get("/ready", include_in_schema=False)
async def ready(request: Request) -> JSONResponse:
    """Readiness: 503 with Retry-After when the process should get no traffic (draining included)."""
    if draining():
        return JSONResponse({"status": "draining"}, status_code=503, headers={"Retry-After": "2"})
    ok, body = await request.app.state.readiness(request)
    return JSONResponse(body, status_code=200 if ok else 503, headers=None if ok else {"Retry-After": "2"})


@router.get("/metrics", include_in_schema=False)
async def metrics():
    return metrics_response()
