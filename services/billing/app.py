"""Billing service: bills (truck loads) and the parent bags loaded onto them, with scanning's marks kept true by
an outbox and a reconciler (services/billing/marks.py)."""
from fastapi import FastAPI

from services.billing import service
from services.billing.api import bills, feed, stats
from services.billing.config import Settings
from services.billing.models import TALLY
from shared.app import Job, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_service_app(
        settings, title="bagtrack billing", routers=[bills.router, stats.router, feed.router], upstreams={"scanning": settings.scanning_url},
        on_startup=[service.build_context],
        jobs=[Job("deliver mark clears", every=settings.outbox_interval, run=service.work_outbox, first_after=1),
              Job("reconcile marks", every=settings.reconcile_interval, run=service.reconcile),
              Job("purge idempotency keys", every=3600, run=service.purge_old_keys, first_after=60),
              *TALLY.jobs()])
