"""The gateway's own endpoints: liveness, readiness with the state of every upstream, metrics."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from shared.errors import ProblemError
from shared.http import ResilientClient
from shared.metrics import metrics_response

router = APIRouter(tags=["ops"])


@router.get("/health", include_in_schema=False)
async def health() -> dict:
    """Liveness: the process answers. No I/O, so a slow upstream never gets the gateway restarted."""
    return {"status": "ok"}


@router.get("/ready", include_in_schema=False)
async def ready(request: Request, strict: bool = False) -> JSONResponse:
    """Readiness: ping every upstream's /ready concurrently, each within `ready_timeout`.

    Answers 200 with status "degraded" when some upstream is not ready: every gateway replica sees the
    same dead upstream, so failing readiness would pull all of them out of the load balancer and turn
    one dead service into a dead API (routes to healthy services keep working, the dead one gets a fast
    503 from its breaker). `?strict=true` answers 503 instead, for deploy checks that need everything up.
    """
    state = request.app.state
    clients: dict[str, ResilientClient] | None = getattr(state, "clients", None)
    if not clients:
        return JSONResponse({"status": "starting", "upstreams": {}}, status_code=503, headers={"Retry-After": "1"})
    timeout = state.settings.ready_timeout
    results = await asyncio.gather(*(_ping(client, timeout) for client in clients.values()))
    upstreams = {
        client.name: {"ready": ok, "detail": detail, "breaker": client.breaker.state}
        for client, (ok, detail) in zip(clients.values(), results)
    }
    all_ready = all(ok for ok, _ in results)
    body = {"status": "ok" if all_ready else "degraded", "upstreams": upstreams}
    if strict and not all_ready:
        return JSONResponse(body, status_code=503, headers={"Retry-After": "2"})
    return JSONResponse(body)


async def _ping(client: ResilientClient, timeout: float) -> tuple[bool, str]:
    try:
        async with asyncio.timeout(timeout):
            response = await client.request("GET", "/ready", retry=False)
    except TimeoutError:
        return False, f"no answer within {timeout}s"
    except ProblemError as exc:
        return False, exc.detail
    except Exception as exc:  # the reason is the point of the check
        return False, f"error: {type(exc).__name__}"
    if response.status != 200:
        return False, f"answered {response.status}"
    return True, "ok"


@router.get("/metrics", include_in_schema=False)
async def metrics():
    return metrics_response()


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    """Every public route of every service, as the gateway serves them (/api/v1/...)."""
    clients = getattr(request.app.state, "clients", None) or {}
    return JSONResponse(await request.app.state.openapi.document(clients))


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="bagtrack API")
