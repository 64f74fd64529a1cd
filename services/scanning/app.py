"""Scanning service: parent and child scans, bags, lookup, search, history, CSV export."""
from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from datetime import timedelta

import anyio
from fastapi import FastAPI

from services.scanning import repository as repo
from services.scanning.api import bags, scans
from services.scanning.config import Settings
from services.scanning.service import ScanningContext
from shared.app import create_service_app
from shared.http import ResilientClient
from shared.timeutil import utcnow

log = logging.getLogger("bagtrack.scanning")

PURGE_EVERY_SECONDS = 3600


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_service_app(settings, title="bagtrack scanning", routers=[scans.router, bags.router],
                              on_startup=[_build_context], on_shutdown=[_stop_purging])


async def _build_context(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    app.state.scanning = ScanningContext(settings=settings, cache=app.state.cache)
    app.state.clients["billing"] = ResilientClient("billing", settings.billing_url, service=settings.service_name,
                                                   timeout=settings.upstream_timeout)
    app.state.purger = asyncio.create_task(_purge_idempotency_keys(app))


async def _stop_purging(app: FastAPI) -> None:
    app.state.purger.cancel()
    with suppress(asyncio.CancelledError):
        await app.state.purger


async def _purge_idempotency_keys(app: FastAPI) -> None:
    """Hourly, in the background: idempotency keys older than SCANNING_IDEMPOTENCY_TTL_HOURS go."""
    hours = app.state.settings.idempotency_ttl_hours

    def purge() -> int:
        with app.state.db.session() as session:
            removed = repo.purge_idempotent(session, utcnow() - timedelta(hours=hours))
            session.commit()
            return removed

    while True:
        try:
            removed = await anyio.to_thread.run_sync(purge)
            if removed:
                log.info("purged %d idempotency keys older than %dh", removed, hours)
        except Exception as exc:  # a database blip must not end the loop
            log.warning("idempotency purge failed: %s", exc)
        await asyncio.sleep(PURGE_EVERY_SECONDS)
