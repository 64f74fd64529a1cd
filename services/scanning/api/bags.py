"""Bag lookup, list/search, CSV export, delete and unlink."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from services.scanning import lists, lookup, writes
from services.scanning.deps import Admin, Anyone, ContextDep, Deleter, Qr
from services.scanning.schemas import BagOut, BagStatus, BagType, ScanResult
from shared.deps import IdempotencyKey, json_response
from shared.errors import problem_responses
from shared.pagination import Page
from shared.params import Area, Cursor, Limit, Since, Until

router = APIRouter(prefix="/bags", tags=["bags"], responses=problem_responses(400, 401, 403, 404, 409, 422, 503))


@router.get("", response_model=Page[BagOut])
async def list_bags(
    ctx: ContextDep,
    principal: Anyone,
    limit: Limit = 50,
    cursor: Cursor = None,
    type: BagType | None = None,
    status: BagStatus | None = None,
    dispatch_area: Area = None,
    created_from: Since = None,
    created_to: Until = None,
    q: Annotated[str | None, Query(max_length=64, description="QR prefix")] = None,
    parent_qr: Annotated[str | None, Query(max_length=64, description="children of this parent")] = None,
) -> Response:
    return json_response(await lists.list_bags(db=ctx.db, principal=principal, limit=limit, cursor=cursor, q=q,
                                               parent_qr=parent_qr, type_=type, status=status, area=dispatch_area,
                                               created_from=created_from, created_to=created_to))


@router.get("/export.csv", response_class=StreamingResponse)
async def export_csv(
    ctx: ContextDep,
    _: Admin,
    type: BagType | None = None,
    status: BagStatus | None = None,
    dispatch_area: Area = None,
    created_from: Since = None,
    created_to: Until = None,
) -> StreamingResponse:
    """Every matching bag as CSV, streamed through a server-side cursor: no row cap, flat memory."""
    filters = dict(type_=type, status=status, area=dispatch_area.lower() if dispatch_area else None,
                   created_from=created_from, created_to=created_to)
    return StreamingResponse(lists.export_csv(ctx.db, filters), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="bags.csv"'})


@router.get("/{qr_id}", response_model=BagOut)
async def get_bag(qr_id: Qr, ctx: ContextDep, principal: Anyone) -> Response:
    # The body is already BagOut's JSON (cached as such); returning it as-is skips a parse and a re-validation.
    return Response(await lookup.lookup(ctx=ctx, principal=principal, raw_qr=qr_id), media_type="application/json")


@router.delete("/{qr_id}", status_code=204)
async def delete_bag(qr_id: Qr, ctx: ContextDep, _: Deleter) -> Response:
    await writes.delete_bag(ctx=ctx, raw_qr=qr_id)
    return Response(status_code=204)


@router.delete("/{parent_qr}/children/{child_qr}", response_model=ScanResult)
async def unlink_child(parent_qr: Qr, child_qr: Qr, ctx: ContextDep, principal: Anyone,
                       idempotency_key: IdempotencyKey = None) -> Response:
    written = await writes.unlink_child(ctx=ctx, principal=principal, raw_parent=parent_qr, raw_child=child_qr,
                                        key=idempotency_key)
    return json_response(written.result, replayed=written.replayed)
