"""The dashboard's counts of bills: by status and today's, and a daily series for charts.

Service-to-service only: no access token (the gateway never routes /internal). Fixed words after /internal/bills,
like api/feed.py's, so no path here shadows another.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.billing import stats
from services.billing.api.bills import ContextDep
from services.billing.stats import BillStats, BillTrends
from shared.deps import json_response
from shared.errors import problem_responses

router = APIRouter(prefix="/internal", tags=["internal"], responses=problem_responses(422, 503))

TrendDays = Annotated[int, Query(ge=1, le=90, description="how many local days, ending today")]


@router.get("/bills/stats", response_model=BillStats)
async def bill_stats(ctx: ContextDep) -> Response:
    """Bills by status, and those created and completed today: exact as of `as_of`."""
    return json_response(await stats.stats(ctx=ctx))


@router.get("/bills/trends", response_model=BillTrends)
async def bill_trends(ctx: ContextDep, days: TrendDays = 14) -> Response:
    """Bills created and completed per local day, oldest first."""
    return json_response(await stats.trends(ctx=ctx, days=days))
