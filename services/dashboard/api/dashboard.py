"""The dashboard's reads: stats, activity, trends, lookup. Any signed-in role; a dispatcher sees their own area
and nothing of billing. Each answer is composed from parts held by the dashboard and comes back within ~100 ms
whatever its sources do: every part says how fresh it is, and `down` names a source that is away."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from services.dashboard.deps import DashboardDep
from services.dashboard.schemas import ActivityOut, LookupOut, StatsOut, TrendsOut
from shared.errors import problem_responses
from shared.security import CurrentPrincipal

router = APIRouter(prefix="/dashboard", tags=["dashboard"], responses=problem_responses(401, 403, 422))

Code = Annotated[str, Path(min_length=1, max_length=64, description="a bag QR or a bill code")]
Days = Annotated[int, Query(ge=1, le=90, description="how many local days, ending today")]


@router.get("/stats", response_model=StatsOut)
async def stats(principal: CurrentPrincipal, dashboard: DashboardDep) -> JSONResponse:
    """Parents by status, children, scans today and in the last hour, completed and billed today, per area;
    bills by status (billers and admins). Cached 30 s, shared by every replica."""
    return JSONResponse(await dashboard.stats_body(principal))


@router.get("/activity", response_model=ActivityOut)
async def activity(principal: CurrentPrincipal, dashboard: DashboardDep) -> JSONResponse:
    """The latest scans with user and time (the caller's area for a dispatcher) and bill events (billers and
    admins). Cached 10 s."""
    return JSONResponse(await dashboard.activity_body(principal))


@router.get("/trends", response_model=TrendsOut)
async def trends(principal: CurrentPrincipal, dashboard: DashboardDep, days: Days = 14) -> JSONResponse:
    """Per local day: scans, completed parents, billed parents and weight; bills created and completed."""
    return JSONResponse(await dashboard.trends_body(principal, days))


@router.get("/lookup/{code}", response_model=LookupOut, responses=problem_responses(404))
async def lookup(code: Code, principal: CurrentPrincipal, dashboard: DashboardDep) -> JSONResponse:
    """A QR: the bag, its parent or children, its last scans and (billers and admins) its bill. A bill code
    (billers and admins): the bill with its parents. Another area's bag is a 404, like an unknown one."""
    return JSONResponse(await dashboard.lookup_body(principal, code))
