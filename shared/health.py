"""Liveness (no I/O, ever) and readiness (dependency pings with a short timeout)."""
from __future__ import annotations

from typing import Callable

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shared.metrics import metrics_response

router = APIRouter(tags=["ops"])

_HEALTH_BODY = b'{"status":"ok"}'
_HEALTH_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_HEALTH_BODY)).encode())]


class LivenessFastPath:
    """Answers `GET /health` before any routing: liveness must be the cheapest request there is, so it stays
    fast while the process is busy (a probe that times out under load restarts a healthy replica)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/health" and scope["method"] in ("GET", "HEAD"):
            scope["route_template"] = "/health"
            await send({"type": "http.response.start", "status": 200, "headers": _HEALTH_HEADERS})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else _HEALTH_BODY})
            return
        await self.app(scope, receive, send)

ReadyCheck = tuple[str, Callable[[], None], bool]  # (name, blocking ping that raises on failure, critical?)


@router.get("/health", include_in_schema=False)
async def health() -> dict:
    """Liveness: the process answers. Touches nothing else, so a slow database never restarts it."""
    return {"status": "ok"}


@router.get("/ready", include_in_schema=False)
async def ready(request: Request) -> JSONResponse:
    """Readiness: 503 when a critical dependency (the database) does not answer within the timeout.

    The cache is reported but not critical: without Redis the service still serves (cache bypassed).
    """
    timeout = request.app.state.settings.ready_timeout
    checks: dict[str, str] = {}
    ok = True
    for name, ping, critical in request.app.state.ready_checks:
        checks[name] = await _run_check(ping, timeout)
        if checks[name] != "ok" and critical:
            ok = False
    body = {"status": "ready" if ok else "not_ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ok else 503, headers=None if ok else {"Retry-After": "2"})


async def _run_check(ping: Callable[[], None], timeout: float) -> str:
    try:
        with anyio.fail_after(timeout):
            # abandon_on_cancel: a hung ping must not hold the response past the timeout.
            await anyio.to_thread.run_sync(ping, abandon_on_cancel=True)
        return "ok"
    except TimeoutError:
        return f"timeout after {timeout}s"
    except Exception as exc:  # the reason is the point of the check
        return f"error: {type(exc).__name__}"


@router.get("/metrics", include_in_schema=False)
async def metrics():
    return metrics_response()
