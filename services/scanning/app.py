"""Scanning service: parent and child scans, bags, lookup, search, history, CSV export."""
from __future__ import annotations

from fastapi import FastAPI

from services.scanning.api import bags, scans
from services.scanning.config import Settings
from services.scanning.service import ScanningContext
from shared.app import create_service_app
from shared.http import ResilientClient


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_service_app(settings, title="bagtrack scanning", routers=[scans.router, bags.router],
                              on_startup=[_build_context])


async def _build_context(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    app.state.scanning = ScanningContext(settings=settings, cache=app.state.cache)
    app.state.clients["billing"] = ResilientClient("billing", settings.billing_url, service=settings.service_name,
                                                   timeout=settings.upstream_timeout)
