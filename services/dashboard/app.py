"""Dashboard service: stats, activity, trends and lookups composed from what scanning and billing own, held in
parts that outlive their sources (services/dashboard/parts.py), and pushed live as Server-Sent Events
(services/dashboard/stream.py)."""
from fastapi import FastAPI

from services.dashboard import service, stream
from services.dashboard.api import dashboard
from services.dashboard.api import stream as stream_api
from services.dashboard.config import Settings
from shared.app import Job, create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_service_app(
        settings, title="bagtrack dashboard", routers=[dashboard.router, stream_api.router],
        upstreams={"scanning": settings.scanning_url, "billing": settings.billing_url},
        on_startup=[service.build_context, stream.build_stream],
        jobs=[Job("settle refreshes at shutdown", every=3600, run=service.settle_at_shutdown, first_after=0),
              Job("event bus reader", every=1.0, run=stream.run_hub, first_after=0),
              Job("follow the sources' feeds", every=settings.stream_poll_interval, run=stream.poll, first_after=0.2)])
