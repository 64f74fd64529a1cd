"""Dependency aliases for the dashboard's handlers (all `async def`, no I/O)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.dashboard.service import Dashboard


async def get_dashboard(request: Request) -> Dashboard:
    return request.app.state.dashboard


DashboardDep = Annotated[Dashboard, Depends(get_dashboard)]
