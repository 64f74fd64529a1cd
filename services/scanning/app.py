"""Scanning service: parent and child scans, bags, lookup, search, history, CSV export; billing's bill marks."""
from __future__ import annotations

from fastapi import FastAPI

from services.scanning.api import bags, feed, internal, scans, stats
from services.scanning.config import Settings
from services.scanning.models import TALLY
from services.scanning.writes import build_context, purge_old_keys
from shared.app import Job, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_service_app(settings, title="bagtrack scanning",
                              routers=[scans.router, bags.router, internal.router, stats.router, feed.router], on_startup=[build_context],
                              jobs=[Job("purge idempotency keys", every=3600, run=purge_old_keys, first_after=60),
                                    *TALLY.jobs()])
