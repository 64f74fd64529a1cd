"""Parent and child scans (idempotent writes) and the scan history."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.scanning import lists, writes
from services.scanning.deps import Anyone, ContextDep, Scanner, pick_key
from services.scanning.schemas import ChildScanIn, ParentFormat, ParentScanIn, ScanKind, ScanOut, ScanReference, ScanResult
from services.scanning.views import CHILD_WEIGHT_KG, weight_kg
from shared.deps import IdempotencyKey, json_response
from shared.errors import problem_responses
from shared.pagination import Page
from shared.params import Area, Cursor, Limit, Since, Until, Username

router = APIRouter(prefix="/scans", tags=["scans"], responses=problem_responses(400, 401, 403, 404, 409, 422, 503))


@router.post("/parent", response_model=ScanResult)
async def scan_parent(body: ParentScanIn, ctx: ContextDep, principal: Scanner,
                      idempotency_key: IdempotencyKey = None) -> Response:
    written = await writes.record_parent_scan(ctx=ctx, principal=principal, raw_qr=body.qr_id,
                                              area=body.dispatch_area, key=pick_key(body.scan_id, idempotency_key))
    return json_response(written.result, replayed=written.replayed)


@router.post("/child", response_model=ScanResult)
async def scan_child(body: ChildScanIn, ctx: ContextDep, principal: Scanner,
                     idempotency_key: IdempotencyKey = None) -> Response:
    written = await writes.record_child_scan(ctx=ctx, principal=principal, raw_parent=body.parent_qr,
                                             raw_child=body.child_qr, key=pick_key(body.scan_id, idempotency_key))
    return json_response(written.result, replayed=written.replayed)


@router.get("/reference", response_model=ScanReference)
async def reference(ctx: ContextDep, _: Anyone) -> ScanReference:
    """The configured QR formats with their capacities, and the windows a client must respect (an offline queue
    older than the idempotency window must not be replayed blindly)."""
    settings = ctx.settings
    return ScanReference(
        parent_formats=[ParentFormat(pattern=p.pattern, capacity=c, full_weight_kg=weight_kg("parent", c))
                        for p, c in settings.parent_rules],
        child_pattern=settings.child_pattern, child_weight_kg=CHILD_WEIGHT_KG,
        idempotency_window_seconds=settings.idempotency_ttl_hours * 3600,
        unlink_window_seconds=settings.unlink_window_seconds)


@router.get("", response_model=Page[ScanOut])
async def scan_history(
    ctx: ContextDep,
    principal: Anyone,
    limit: Limit = 50,
    cursor: Cursor = None,
    kind: ScanKind | None = None,
    dispatch_area: Area = None,
    username: Username = None,
    qr: Annotated[str | None, Query(max_length=64, description="scans of this bag, as parent or child")] = None,
    created_from: Since = None,
    created_to: Until = None,
) -> Response:
    return json_response(await lists.list_scans(db=ctx.db, principal=principal, limit=limit, cursor=cursor, qr=qr,
                                                kind=kind, area=dispatch_area, username=username,
                                                created_from=created_from, created_to=created_to))
