"""The gateway app; served by `python -m gateway` (gateway/server.py), never by uvicorn's CLI."""
from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware import Middleware

from gateway import ops, web
from gateway.config import GatewaySettings
from gateway.openapi import MergedOpenApi
from gateway.proxy import Proxy
from gateway.routes import API_PREFIX
from shared.app import create_service_app
from shared.middleware import PrefixRoute


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """/api/v1/* goes to the raw proxy; the gateway's own endpoints (ops, merged docs) are a small FastAPI app."""
    settings = settings or GatewaySettings()
    proxy = Proxy(settings.max_body_bytes, max_header_bytes=settings.max_header_bytes,
                  max_headers_total_bytes=settings.max_headers_total_bytes,
                  max_authorization_bytes=settings.max_authorization_bytes,
                  body_stall_timeout=settings.body_stall_timeout,
                  stream_read_timeout=settings.stream_read_timeout, rate_limits=settings.rate_limits,
                  bulkheads=settings.bulkhead_caps(), request_budget=settings.request_budget)
    app = create_service_app(settings, title="bagtrack gateway", routers=[ops.router, web.router],
                             upstreams=settings.upstream_urls(), on_startup=[proxy.attach],
                             readiness=ops.upstream_readiness, front=(API_PREFIX + "/", proxy), own_docs=False)
    app.state.openapi = MergedOpenApi()
    # Inside the request-context middleware (request id, metrics, access log), before the proxy's prefix route.
    front = next(i for i, entry in enumerate(app.user_middleware) if entry.cls is PrefixRoute)
    app.user_middleware.insert(front, Middleware(ops.OpsPortSplit, ops_port=settings.ops_port))
    return app
