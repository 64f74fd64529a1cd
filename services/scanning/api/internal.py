"""What billing asks of scanning: bill marks, child counts, the marks for its reconciler.

Service-to-service only: no access token, because the gateway never routes /internal (gateway/routes.py lists
what it forwards) and only the internal network reaches a service's own port.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.scanning import marks
from services.scanning.deps import ContextDep, Qr
from services.scanning.schemas import (BILL_CODE, MAX_MARKS_PAGE, BillMarkIn, BillMarkOut, BillMarksPage,
                                       ParentCountsIn, ParentCountsOut)
from shared.deps import json_response
from shared.errors import problem_responses
from shared.params import Since, Until

router = APIRouter(prefix="/internal/parents", tags=["internal"], responses=problem_responses(404, 409, 422, 503))

BillCode = Annotated[str, Query(**BILL_CODE)]


@router.put("/{qr_id}/bill", response_model=BillMarkOut)
async def mark_billed(qr_id: Qr, body: BillMarkIn, ctx: ContextDep) -> Response:
    """Mark the parent as on this bill (by billing's row, `link`) before billing commits it there; 409
    `parent-billed` (with `bill_id` and `link`) when another bill holds it, 404 when it does not exist (deleted, or never scanned)."""
    return json_response(await marks.mark_billed(ctx=ctx, raw_qr=qr_id, bill_id=body.bill_id, link=body.link))


@router.delete("/{qr_id}/bill", status_code=204)
async def clear_mark(qr_id: Qr, bill_id: BillCode, link: Annotated[int, Query(ge=1, le=2**62)],
                     ctx: ContextDep) -> Response:
    """The parent no longer carries this mark (another bill's, or a later link's, is left alone): 204 every time."""
    await marks.clear_mark(ctx=ctx, raw_qr=qr_id, bill_id=bill_id, link=link)
    return Response(status_code=204)


@router.post("/counts", response_model=ParentCountsOut)
async def parent_counts(body: ParentCountsIn, ctx: ContextDep) -> Response:
    """Children, capacity and bill mark of up to 500 parents in one call (a bill's weights: 1 kg a child)."""
    return json_response(await marks.parent_counts(ctx=ctx, raw_qrs=body.qr_ids))


@router.get("/marks", response_model=BillMarksPage)
async def list_marks(
    ctx: ContextDep,
    billed_after: Since = None,
    billed_before: Until = None,
    after_qr: Annotated[str | None, Query(max_length=64, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_MARKS_PAGE)] = 500,
) -> Response:
    """Marked parents in QR order; a billed_at window (what the reconciler mostly asks) reads only its marks."""
    return json_response(await marks.list_marks(ctx=ctx, limit=limit, after_qr=after_qr, billed_after=billed_after,
                                                billed_before=billed_before))
