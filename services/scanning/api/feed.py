"""What the dashboard reads of scanning: recent scans for its activity feed, and one bag composed for its lookup.

Service-to-service only, like api/internal.py: no access token (the gateway never routes /internal). The
dashboard applies its callers' area rule by passing `area`.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.scanning import feed
from services.scanning.deps import ContextDep, Qr
from services.scanning.schemas import MAX_SCAN_ID, BagLookup, ScanFeed
from shared.deps import json_response
from shared.errors import problem_responses
from shared.params import Area, Limit

router = APIRouter(prefix="/internal", tags=["internal"], responses=problem_responses(404, 422, 503))

AfterId = Annotated[int | None, Query(ge=0, le=MAX_SCAN_ID, description="only scans with a higher id")]


@router.get("/scans", response_model=ScanFeed)
async def recent_scans(ctx: ContextDep, after_id: AfterId = None, area: Area = None, limit: Limit = 50) -> Response:
    """The newest scans (of one area), newest first, with user and time, and the highest scan id there is."""
    return json_response(await feed.recent_scans(ctx=ctx, after_id=after_id, area=area, limit=limit))


@router.get("/bags/{qr_id}/lookup", response_model=BagLookup)
async def lookup_bag(qr_id: Qr, ctx: ContextDep, area: Area = None) -> Response:
    """The bag (as GET /bags/{qr_id} shows it), a child's parent, its last scans; 404 for a bag of another area."""
    return json_response(await feed.lookup_bag(ctx=ctx, raw_qr=qr_id, area=area))
