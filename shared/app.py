"""create_service_app(): every service's defaults in one call — lifespan-built DB, cache, token verifier,
health/ready/metrics, request ids, JSON logs, problem-details errors."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

from fastapi import APIRouter, FastAPI

from shared.cache import create_cache
from shared.db import Database
from shared.errors import install_error_handlers
from shared.health import LivenessFastPath
from shared.health import router as health_router
from shared.http import ResilientClient
from shared.logging import configure_logging
from shared.middleware import RequestContextMiddleware
from shared.security import TokenVerifier, fetch_jwks
from shared.settings import ServiceSettings

Hook = Callable[[FastAPI], Awaitable[None] | None]


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    routers: Iterable[APIRouter] = (),
    on_startup: Iterable[Hook] = (),
    on_shutdown: Iterable[Hook] = (),
    jwks_source: Callable[[FastAPI], Callable[[], Awaitable[dict[str, Any]]]] | None = None,
) -> FastAPI:
    """A FastAPI app whose pools and clients are created in its lifespan and kept on app.state.

    `jwks_source(app)` supplies signing keys; by default they are fetched from auth's JWKS URL.
    """
    service = settings.service_name

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(service, settings.log_level)
        app.state.db = Database(settings)
        app.state.cache = create_cache(settings.redis_url, service)
        app.state.clients = {}
        app.state.ready_checks = [("database", app.state.db.ping, True), ("cache", app.state.cache.ping, False)]
        if jwks_source is not None:
            source = jwks_source(app)
        else:
            auth = app.state.clients["auth"] = ResilientClient("auth", settings.auth_url, service=service,
                                                               timeout=settings.upstream_timeout)
            source = lambda: fetch_jwks(auth)  # noqa: E731
        app.state.verifier = TokenVerifier(issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                                           jwks_source=source, cache_seconds=settings.jwks_cache_seconds)
        warm_up = None
        try:
            for hook in on_startup:
                await _maybe_await(hook(app))
            warm_up = asyncio.create_task(app.state.verifier.warm_up())
            yield
        finally:
            if warm_up is not None:
                warm_up.cancel()
            for hook in on_shutdown:
                await _maybe_await(hook(app))
            for client in app.state.clients.values():
                await client.close()
            app.state.cache.close()
            await app.state.cache.aclose()
            app.state.db.dispose()

    app = FastAPI(title=title, lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(LivenessFastPath)
    app.add_middleware(RequestContextMiddleware, service=service, access_log_enabled=settings.access_log)
    app.include_router(health_router)
    for router in routers:
        app.include_router(router)
    return app


async def _maybe_await(result: Any) -> None:
    if hasattr(result, "__await__"):
        await result
