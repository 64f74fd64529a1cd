"""Scanning service: its domain lands in a later issue; the app, DB, migrations and probes are wired now."""
from fastapi import FastAPI

from services.scanning.config import Settings
from shared.app import create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(settings or Settings(), title="bagtrack scanning")
