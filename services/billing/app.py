"""Billing service: bills (truck loads) and the parent bags on them. So far it answers which bill holds a
parent (scanning asks before deleting one); creating and filling bills comes with the billing issue."""
from fastapi import FastAPI

from services.billing.api import parents
from services.billing.config import Settings
from shared.app import create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(settings or Settings(), title="bagtrack billing", routers=[parents.router])
