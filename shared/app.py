"""create_service_app(): every process's defaults in one call — the gateway's and each service's.

Built in the lifespan and kept on app.state: the database (services), the cache, one resilient client per
upstream, the token verifier; plus liveness, readiness, metrics, request ids, JSON logs, problem-details errors,
start-up hooks and background jobs. Nothing connects at import time.
"""
from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping

from fastapi import APIRouter, FastAPI, Request

from shared.cache import create_cache
from shared.db import Database, install_database_error_handlers
from shared.errors import install_error_handlers
from shared.health import LivenessFastPath, ReadyCheck, dependency_readiness
from shared.health import router as ops_router
from shared.http import ResilientClient
from shared.input_guard import InputGuard
from shared.logging import configure_logging
from shared.metrics import LOOP_LAG
from shared.middleware import PrefixRoute, RequestContextMiddleware
from shared.proxies import ClientAddressMiddleware, trusted_proxies
from shared.security import TokenVerifier, fetch_jwks
from shared.settings import CommonSettings, ServiceSettings

log = logging.getLogger("bagtrack.app")

Hook = Callable[[FastAPI], Awaitable[None]]
NO_OPENTELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


@dataclass(frozen=True)
class Job:
    """A background task: `run(app)` every `every` seconds while the process lives; a failure is logged and the
    job runs again next time (a database blip must not end it)."""

    name: str
    every: float
    run: Hook
    first_after: float | None = None  # seconds after start-up of the first run (default: `every`)


def create_service_app(
    settings: CommonSettings,
    *,
    title: str,
    routers: Iterable[APIRouter] = (),
    upstreams: Mapping[str, str] | None = None,
    on_startup: Iterable[Hook] = (),
    jobs: Iterable[Job] = (),
    jwks_source: Callable[[FastAPI], Callable[[], Awaitable[dict[str, Any]]]] | None = None,
    readiness: Callable[[Request], Awaitable[tuple[bool, dict]]] | None = None,
    front: tuple[str, Any] | None = None,
    own_docs: bool = True,
) -> FastAPI:
    """A FastAPI app with the shared defaults.

    A service (ServiceSettings) gets its database; `upstreams` names the services it calls (one ResilientClient
    each, in app.state.clients). Signing keys come from auth's JWKS unless `jwks_source(app)` supplies them.
    `readiness(request)` replaces the default readiness (database critical, cache reported). `front=(prefix, asgi)`
    hands every path under `prefix` to a raw ASGI handler before routing (the gateway's proxy).
    """
    service = settings.service_name
    hooks, background = list(on_startup), list(jobs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(service, settings.log_level)
        app.state.db = Database(settings) if isinstance(settings, ServiceSettings) else None
        app.state.cache = create_cache(settings.redis_url, service)
        clients = {name: ResilientClient.from_settings(name, url, settings) for name, url in (upstreams or {}).items()}
        if jwks_source is None and "auth" not in clients:
            clients["auth"] = ResilientClient.from_settings("auth", settings.auth_url, settings)
        app.state.clients = clients
        checks: list[ReadyCheck] = [("cache", app.state.cache.ping, False)]
        if app.state.db is not None:
            checks.insert(0, ("database", app.state.db.ping, True))
        app.state.ready_checks = checks
        source = jwks_source(app) if jwks_source else (lambda: fetch_jwks(clients["auth"]))
        app.state.verifier = TokenVerifier(issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                                           jwks_source=source, cache_seconds=settings.jwks_cache_seconds,
                                           min_refresh=settings.jwks_min_refresh,
                                           memo_size=settings.verified_tokens_max)
        tasks: list[asyncio.Task] = []
        try:
            for client in clients.values():
                await client.start()
            for hook in hooks:
                await hook(app)
            settle_garbage_collector()
            tasks.append(asyncio.create_task(app.state.verifier.warm_up()))
            tasks.append(asyncio.create_task(_watch_loop_lag(service)))
            tasks += [asyncio.create_task(_repeat(job, app)) for job in background]
            if app.state.db is not None and app.state.db.pgbouncer:
                tasks.append(asyncio.create_task(app.state.db.check_session()))
            if app.state.db is not None and app.state.db.has_replica:
                tasks.append(asyncio.create_task(_watch_replica(app.state.db)))
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task
            for client in clients.values():
                await client.close()
            await app.state.cache.aclose()
            if app.state.db is not None:
                await app.state.db.dispose()

    docs = {} if own_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    # FastAPI's own OpenTelemetry hooks run on every request even with no provider configured (environment
    # lookups, span and metric calls); the Prometheus metrics below are this project's telemetry.
    # No trailing-slash redirects: a 307 would carry the service's own URL (http://scanning:8002/...) to the client,
    # which would then send its token straight to the service.
    app = FastAPI(title=title, lifespan=lifespan, telemetry=NO_OPENTELEMETRY, redirect_slashes=False, **docs)
    app.state.settings = settings
    app.state.readiness = readiness or dependency_readiness
    install_error_handlers(app)
    install_database_error_handlers(app)
    if front is not None:
        app.add_middleware(PrefixRoute, prefix=front[0], handler=front[1])
    # NUL and lone surrogates refused before any handler (or the gateway's proxy, which checks path and query only).
    app.add_middleware(InputGuard, bodies=front is None)
    app.add_middleware(LivenessFastPath)
    app.add_middleware(RequestContextMiddleware, service=service, access_log_enabled=settings.access_log,
                       trust_deadline=service != "gateway")
    app.add_middleware(ClientAddressMiddleware, trusted=trusted_proxies(settings))  # outermost: sets the client
    app.include_router(ops_router)
    for router in routers:
        app.include_router(router)
    return app


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector from stalling the event loop.

    Measured under 500 users, a full collection of a service process took 250-320 ms (and found almost nothing:
    reference counting frees what requests allocate), once every ~13 s: every request in flight waited, timeouts
    fired upstream, the gateway's breaker opened. What start-up built (modules, tables, schemas, routes) lives
    as long as the process, so it is frozen out of every later collection; and collections run after 10,000 new
    container objects instead of 700."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


async def _watch_loop_lag(service: str, tick: float = 0.1) -> None:
    """Publish how late the event loop runs timers (bagtrack_event_loop_lag_seconds) and log stalls: one event
    loop serves every request of the process, so a stall delays them all (and trips callers' timeouts)."""
    gauge, loop = LOOP_LAG.labels(service), asyncio.get_running_loop()
    worst, window_start = 0.0, loop.time()
    while True:
        before = loop.time()
        await asyncio.sleep(tick)
        lag = loop.time() - before - tick
        worst = max(worst, lag)
        if lag > 0.25:
            log.warning("event loop stalled for %.0f ms", lag * 1000)
        if loop.time() - window_start >= 1.0:
            gauge.set(worst)
            worst, window_start = 0.0, loop.time()


async def _watch_replica(db: Database) -> None:
    while True:
        await db.watch_replica()
        await asyncio.sleep(db.replica_probe_interval)


async def _repeat(job: Job, app: FastAPI) -> None:
    await asyncio.sleep(job.every if job.first_after is None else job.first_after)
    while True:
        try:
            await job.run(app)
        except Exception as exc:
            log.warning("background job %s failed: %s", job.name, exc)
        await asyncio.sleep(job.every)
