"""The dashboard's counts of scanning: today's figures per dispatch area, and a daily series for charts.

Service-to-service only, like api/internal.py: no access token (the gateway never routes /internal). The
dashboard applies its callers' area rule by passing `area`.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.scanning import stats
from services.scanning.deps import ContextDep
from services.scanning.stats import ScanningStats, ScanningTrends
from shared.deps import json_response
from shared.errors import problem_responses
from shared.params import Area

router = APIRouter(prefix="/internal", tags=["internal"], responses=problem_responses(422, 503))

TrendDays = Annotated[int, Query(ge=1, le=90, description="how many local days, ending today")]


@router.get("/stats", response_model=ScanningStats)
async def area_stats(ctx: ContextDep, area: Area = None) -> Response:
    """Parents by status, children, scans today and in the last hour, completions and billing of today, per
    area (only `area`, zeros if it has nothing), with totals: exact as of `as_of`."""
    return json_response(await stats.stats(ctx=ctx, area=area))


@router.get("/trends", response_model=ScanningTrends)
async def daily_trends(ctx: ContextDep, days: TrendDays = 14, area: Area = None) -> Response:
    """Scans, completed parents and billed parents (and their weight) per local day, oldest first."""
    return json_response(await stats.trends(ctx=ctx, days=days, area=area))
