"""Bag lookup, list/search, CSV export, delete and unlink."""
from __future__ import annotations

import csv
import io
from typing import Annotated, Iterator

import anyio
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from services.scanning import repository as repo
from services.scanning import service
from services.scanning.billing import parent_bill
from services.scanning.deps import Admin, Anyone, ContextDep, DbDep, Deleter, IdempotencyKey
from services.scanning.idempotency import run_write
from services.scanning.schemas import BagOut, BagStatus, BagType, ScanResult
from shared.db import Database
from shared.errors import problem_responses
from shared.http import forwarded_headers
from shared.pagination import Page
from shared.params import Area, Cursor, Limit, Since, Until
from shared.timeutil import as_utc

router = APIRouter(prefix="/bags", tags=["bags"], responses=problem_responses(400, 401, 403, 404, 409, 422, 503))

Qr = Annotated[str, Path(min_length=1, max_length=64)]
CSV_COLUMNS = ("qr_id", "type", "status", "dispatch_area", "child_count", "capacity", "weight_kg", "parent_qr",
               "created_by", "created_at")


@router.get("", response_model=Page[BagOut])
def list_bags(
    db: DbDep,
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
) -> Page[BagOut]:
    with db.session(read_only=True) as session:
        return service.list_bags(session=session, principal=principal, limit=limit, cursor=cursor, q=q,
                                 parent_qr=parent_qr, type_=type, status=status, area=dispatch_area,
                                 created_from=created_from, created_to=created_to)


@router.get("/export.csv", response_class=StreamingResponse)
def export_csv(
    db: DbDep,
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
    return StreamingResponse(_csv_rows(db, filters), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="bags.csv"'})


def _csv_rows(db: Database, filters: dict) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    # A transaction, not an autocommit read: the server-side cursor lives in it, and the export is one snapshot.
    with db.session() as session:
        for n, (qr, type_, status, area, count, capacity, parent_qr, by, at) in enumerate(
                repo.stream_export_rows(session, **filters), start=1):
            writer.writerow((qr, type_, status, area, count, "" if capacity is None else capacity,
                             service.weight_kg(type_, count),
                             parent_qr or "", by, as_utc(at).isoformat()))
            if n % 1000 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


@router.get("/{qr_id}", response_model=BagOut)
async def get_bag(qr_id: Qr, db: DbDep, ctx: ContextDep, principal: Anyone) -> Response:
    # The body is already BagOut's JSON (cached as such); returning it as-is skips a parse and a re-validation.
    raw = await service.lookup(db=db, ctx=ctx, principal=principal, raw_qr=qr_id)
    return Response(raw, media_type="application/json")


@router.delete("/{qr_id}", status_code=204)
def delete_bag(qr_id: Qr, request: Request, db: DbDep, ctx: ContextDep, principal: Deleter) -> Response:
    billing = request.app.state.clients["billing"]
    headers = forwarded_headers(request.headers)
    service.delete_bag(db=db, ctx=ctx, principal=principal, raw_qr=qr_id,
                       bill_of=lambda qr: anyio.from_thread.run(parent_bill, billing, qr, headers))
    return Response(status_code=204)


@router.delete("/{parent_qr}/children/{child_qr}", response_model=ScanResult)
def unlink_child(parent_qr: Qr, child_qr: Qr, db: DbDep, ctx: ContextDep, principal: Anyone, response: Response,
                 idempotency_key: IdempotencyKey = None) -> dict:
    return run_write(
        db=db, cache=ctx.cache, principal=principal, key=idempotency_key, operation="unlink",
        request={"parent_qr": parent_qr, "child_qr": child_qr}, response=response,
        action=lambda session: service.unlink_child(session=session, ctx=ctx, principal=principal,
                                                    raw_parent=parent_qr, raw_child=child_qr))
