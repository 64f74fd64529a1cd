"""Bills: create, read, list/search, edit, delete, load and remove parents, complete, reopen, history, the day's
summary, CSV export. Billers' and admins' only (a bill shows parents of every area: dispatchers get 403)."""
from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, BeforeValidator

from services.billing import service
from services.billing.schemas import AddBag, BillCreate, BillEdit, BillEventOut, BillOut, BillStatus, DaySummary
from services.billing.service import BillingContext
from shared.deps import IdempotencyKey, json_response
from shared.errors import problem_responses
from shared.pagination import Page
from shared.params import Cursor, Limit, Since, Until, Username, written_date
from shared.security import Principal, require_roles

router = APIRouter(prefix="/bills", tags=["bills"], responses=problem_responses(400, 401, 403, 404, 409, 422, 503))


async def get_context(request: Request) -> BillingContext:
    return request.app.state.billing


ContextDep = Annotated[BillingContext, Depends(get_context)]
Biller = Annotated[Principal, Depends(require_roles("biller", "admin"))]
Admin = Annotated[Principal, Depends(require_roles("admin"))]
BillCode = Annotated[str, Path(min_length=1, max_length=64)]
ParentQr = Annotated[str, Path(min_length=1, max_length=64)]


def _sane_day(day: date | None) -> date | None:
    if day is not None and not 1970 <= day.year <= 2999:
        raise ValueError("date must be between 1970 and 2999")
    return day


Day = Annotated[date | None, Query(description="YYYY-MM-DD, a day of BAGTRACK_TIMEZONE (default: today there)"),
                BeforeValidator(written_date), AfterValidator(_sane_day)]
Search = Annotated[str | None, Query(max_length=64, description="text in the code, description, destination or vehicle")]


def _filters(status, created_by, created_from, created_to, q) -> dict:
    return dict(status=status, created_by=created_by, created_from=created_from, created_to=created_to,
                q=q.strip() if q and q.strip() else None)


@router.post("", response_model=BillOut, status_code=201)
async def create_bill(body: BillCreate, ctx: ContextDep, principal: Biller,
                      idempotency_key: IdempotencyKey = None) -> Response:
    written = await service.create_bill(ctx=ctx, principal=principal, body=body, key=idempotency_key)
    return json_response(BillOut.model_validate(written.result), status_code=201, replayed=written.replayed)


@router.get("", response_model=Page[BillOut])
async def list_bills(ctx: ContextDep, _: Biller, limit: Limit = 50, cursor: Cursor = None,
                     status: BillStatus | None = None, created_by: Username = None, created_from: Since = None,
                     created_to: Until = None, q: Search = None) -> Response:
    """Newest first. Counts are the stored ones, with their age (`counts`); read a bill for fresh ones."""
    page = await service.list_bills(ctx=ctx, limit=limit, cursor=cursor,
                                    **_filters(status, created_by, created_from, created_to, q))
    return json_response(Page[BillOut](items=[BillOut.model_validate(i) for i in page.items],
                                       next_cursor=page.next_cursor))


@router.get("/summary", response_model=DaySummary)
async def day_summary(ctx: ContextDep, _: Biller, date: Day = None) -> Response:
    """Bills created on one day of the warehouse, by status and by creator, with bag and weight totals."""
    return json_response(await service.day_summary(ctx=ctx, day=date))


@router.get("/export.csv", response_class=StreamingResponse)
async def export_csv(ctx: ContextDep, _: Admin, status: BillStatus | None = None, created_by: Username = None,
                     created_from: Since = None, created_to: Until = None, q: Search = None) -> StreamingResponse:
    """Every matching bill as CSV, streamed: no row cap, flat memory."""
    filters = _filters(status, created_by, created_from, created_to, q)
    return StreamingResponse(service.export_csv(ctx.db, filters), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="bills.csv"'})


@router.get("/{bill_id}", response_model=BillOut)
async def read_bill(bill_id: BillCode, ctx: ContextDep, _: Biller) -> Response:
    """The bill with its parents; children counted by scanning now, or the last known counts marked stale."""
    return json_response(BillOut.model_validate(await service.read_bill(ctx=ctx, raw=bill_id)))


@router.patch("/{bill_id}", response_model=BillOut)
async def edit_bill(bill_id: BillCode, body: BillEdit, ctx: ContextDep, principal: Biller,
                    idempotency_key: IdempotencyKey = None) -> Response:
    written = await service.edit_bill(ctx=ctx, principal=principal, raw=bill_id, body=body, key=idempotency_key)
    return json_response(BillOut.model_validate(written.result), replayed=written.replayed)


@router.delete("/{bill_id}", status_code=204)
async def delete_bill(bill_id: BillCode, ctx: ContextDep, principal: Admin) -> Response:
    """Admins only. Its parents are released: free to load onto another bill, and deletable in scanning."""
    await service.delete_bill(ctx=ctx, principal=principal, raw=bill_id)
    return Response(status_code=204)


@router.post("/{bill_id}/bags", response_model=BillOut, status_code=201)
async def add_parent(bill_id: BillCode, body: AddBag, ctx: ContextDep, principal: Biller,
                     idempotency_key: IdempotencyKey = None) -> Response:
    written = await service.add_parent(ctx=ctx, principal=principal, raw_bill=bill_id, raw_qr=body.parent_qr,
                                       key=idempotency_key)
    return json_response(BillOut.model_validate(written.result), status_code=201, replayed=written.replayed)


@router.delete("/{bill_id}/bags/{parent_qr}", response_model=BillOut)
async def remove_parent(bill_id: BillCode, parent_qr: ParentQr, ctx: ContextDep, principal: Biller,
                        idempotency_key: IdempotencyKey = None) -> Response:
    written = await service.remove_parent(ctx=ctx, principal=principal, raw_bill=bill_id, raw_qr=parent_qr,
                                          key=idempotency_key)
    return json_response(BillOut.model_validate(written.result), replayed=written.replayed)


@router.post("/{bill_id}/complete", response_model=BillOut)
async def complete_bill(bill_id: BillCode, ctx: ContextDep, principal: Biller,
                        idempotency_key: IdempotencyKey = None) -> Response:
    written = await service.complete_bill(ctx=ctx, principal=principal, raw=bill_id, key=idempotency_key)
    return json_response(BillOut.model_validate(written.result), replayed=written.replayed)


@router.post("/{bill_id}/reopen", response_model=BillOut)
async def reopen_bill(bill_id: BillCode, ctx: ContextDep, principal: Biller,
                      idempotency_key: IdempotencyKey = None) -> Response:
    written = await service.reopen_bill(ctx=ctx, principal=principal, raw=bill_id, key=idempotency_key)
    return json_response(BillOut.model_validate(written.result), replayed=written.replayed)


@router.get("/{bill_id}/history", response_model=Page[BillEventOut])
async def bill_history(bill_id: BillCode, ctx: ContextDep, _: Biller, limit: Limit = 50,
                       cursor: Cursor = None) -> Response:
    """Every add, remove, complete, reopen, edit and delete of the bill, with who and when, oldest first."""
    return json_response(await service.bill_history(ctx=ctx, raw=bill_id, limit=limit, cursor=cursor))
