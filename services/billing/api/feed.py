"""What the dashboard reads of billing: every bill's history as an activity feed, a bill by its code (for a
lookup), and which bill holds a parent.

Service-to-service only: no access token (the gateway never routes /internal; only the internal network reaches
a service's own port). Every path here has a fixed word after /internal/bills, so none can shadow another
/internal/bills/<word> route.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from services.billing import feed, service
from services.billing.api.bills import ContextDep
from services.billing.schemas import MAX_EVENT_ID, BillEventsFeed, BillOut, ParentBillOut
from shared.deps import json_response
from shared.errors import problem_responses
from shared.params import Limit

router = APIRouter(prefix="/internal", tags=["internal"], responses=problem_responses(404, 422, 503))

AfterId = Annotated[int | None, Query(ge=0, le=MAX_EVENT_ID, description="only events with a higher id")]
Code = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/bills/events", response_model=BillEventsFeed)
async def recent_events(ctx: ContextDep, after_id: AfterId = None, limit: Limit = 50) -> Response:
    """Every bill's history, newest first, with user and time, and the highest event id there is."""
    return json_response(await feed.recent_events(ctx=ctx, after_id=after_id, limit=limit))


@router.get("/bills/lookup/{bill_id}", response_model=BillOut)
async def lookup_bill(bill_id: Code, ctx: ContextDep) -> Response:
    """The bill exactly as GET /bills/{bill_id} shows it: the same read, with fresh counts from scanning within
    BILLING_COUNTS_TIMEOUT, or the stored ones marked stale when scanning cannot say."""
    return json_response(BillOut.model_validate(await service.read_bill(ctx=ctx, raw=bill_id)))


@router.get("/parents/{qr_id}/bill", response_model=ParentBillOut)
async def parent_bill(qr_id: Code, ctx: ContextDep) -> Response:
    """The bill holding this parent, or `{"bill": null}`: 200 either way."""
    return json_response(await feed.parent_bill(ctx=ctx, raw_qr=qr_id))
