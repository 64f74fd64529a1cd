"""The gateway's own endpoints beside the shared ones: readiness as the state of every upstream, merged docs; and
which of them each listening port serves."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from gateway.proxy import send_problem
from shared.errors import ProblemError
from shared.http import ResilientClient
from shared.metrics import DEPENDENCY_UP

router = APIRouter(tags=["ops"])

OPS_ONLY = frozenset({"/ready", "/metrics"})
OPS_PATHS = OPS_ONLY | {"/health"}


class OpsPortSplit:
    """/ready and /metrics only on the ops port, which serves nothing but them and /health: readiness and metrics
    describe the whole system (every upstream, every route) and are no business of the public. Told apart by the
    request's local port (scope["server"], the socket it arrived on). Anything refused is the 404 of an unknown
    route."""

    def __init__(self, app, *, ops_port: int) -> None:
        self.app = app
        self.ops_port = ops_port

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            server = scope.get("server")
            on_ops = server is not None and server[1] == self.ops_port
            refused = scope["path"] not in OPS_PATHS if on_ops else scope["path"] in OPS_ONLY
            if refused:
                return await send_problem(send, 404, "Not Found", slug="not-found")
        await self.app(scope, receive, send)


async def upstream_readiness(request: Request) -> tuple[bool, dict]:
    """Readiness: ping every upstream's /ready concurrently, each within `ready_timeout`.

    Answers 200 with status "degraded" when some upstream is not ready: every gateway replica sees the
    same dead upstream, so failing readiness would pull all of them out of the load balancer and turn
    one dead service into a dead API (routes to healthy services keep working, the dead one gets a fast
    503 from its breaker). `?strict=true` answers 503 instead, for deploy checks that need everything up.
    """
    state = request.app.state
    clients: dict[str, ResilientClient] = state.clients
    timeout = state.settings.ready_timeout
    results = await asyncio.gather(*(_ping(client, timeout) for client in clients.values()))
    for client, (ok, _) in zip(clients.values(), results):
        DEPENDENCY_UP.labels(state.settings.service_name, client.name).set(ok)
    upstreams = {
        client.name: {"ready": ok, "detail": detail, "breaker": client.breaker.state}
        for client, (ok, detail) in zip(clients.values(), results)
    }
    all_ready = all(ok for ok, _ in results)
    body = {"status": "ok" if all_ready else "degraded", "upstreams": upstreams}
    strict = request.query_params.get("strict", "").lower() in ("1", "true", "yes")
    return all_ready or not strict, body


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


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    """Every public route of every service, as the gateway serves them (/api/v1/...)."""
    return JSONResponse(await request.app.state.openapi.document(request.app.state.clients))


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="bagtrack API")
