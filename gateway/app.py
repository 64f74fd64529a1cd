"""Gateway entry point: `uvicorn --factory gateway.app:create_app --port 8080 --loop uvloop --http httptools`."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager, suppress
from typing import AsyncIterator

from fastapi import FastAPI

from gateway.config import GatewaySettings
from gateway.openapi import MergedOpenApi
from gateway.ops import router as ops_router
from gateway.proxy import Proxy
from gateway.routes import API_PREFIX
from shared.errors import install_error_handlers
from shared.health import LivenessFastPath
from shared.http import ResilientClient
from shared.logging import configure_logging
from shared.middleware import RequestContextMiddleware
from shared.security import TokenVerifier, fetch_jwks

_API = API_PREFIX + "/"


class Gateway:
    """Outer ASGI app: /api/v1/* goes to the raw proxy; everything else, lifespan included, to the ops app."""

    def __init__(self, ops: FastAPI, proxy: Proxy) -> None:
        self.ops = ops
        self.proxy = proxy

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_API):
            await self.proxy(scope, receive, send)
        else:
            await self.ops(scope, receive, send)


def create_app(settings: GatewaySettings | None = None) -> RequestContextMiddleware:
    """The gateway as an ASGI app; clients and the token verifier are built in the lifespan, not here."""
    settings = settings or GatewaySettings()
    proxy = Proxy(settings.max_body_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.service_name, settings.log_level)
        clients = {
            name: ResilientClient(name, url, service=settings.service_name, timeout=settings.upstream_timeout,
                                  connect_timeout=settings.connect_timeout, max_connections=settings.max_connections,
                                  fail_max=settings.breaker_fail_max, reset_timeout=settings.breaker_reset_timeout)
            for name, url in settings.upstream_urls().items()
        }
        for client in clients.values():
            await client.start()
        auth_client = clients["auth"]
        verifier = TokenVerifier(issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                                 jwks_source=lambda: fetch_jwks(auth_client),
                                 cache_seconds=settings.jwks_cache_seconds, memo_size=settings.verified_tokens_max)
        app.state.clients, app.state.verifier = clients, verifier
        proxy.attach(clients, verifier)
        warm_up = asyncio.create_task(verifier.warm_up())
        try:
            yield
        finally:
            warm_up.cancel()
            with suppress(asyncio.CancelledError):
                await warm_up
            proxy.detach()
            for client in clients.values():
                await client.close()

    ops = FastAPI(title="bagtrack gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    ops.state.settings = settings
    ops.state.openapi = MergedOpenApi()
    install_error_handlers(ops)
    ops.include_router(ops_router)
    gateway = Gateway(ops, proxy)
    return RequestContextMiddleware(LivenessFastPath(gateway), service=settings.service_name,
                                    access_log_enabled=settings.access_log)
