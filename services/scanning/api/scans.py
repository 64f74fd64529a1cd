"""Parent and child scans (idempotent writes) and the scan history."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.scanning import service
from services.scanning.deps import Anyone, ContextDep, DbDep, IdempotencyKey, Scanner
from services.scanning.idempotency import pick_key, run_write
from services.scanning.schemas import ChildScanIn, ParentScanIn, ScanKind, ScanOut, ScanResult
from shared.errors import problem_responses
from shared.pagination import Page
from shared.params import Area, Cursor, Limit, Since, Until, Username

router = APIRouter(prefix="/scans", tags=["scans"], responses=problem_responses(400, 401, 403, 404, 409, 422, 503))

@router.post("/parent", response_model=ScanResult)
def scan_parent(body: ParentScanIn, db: DbDep, ctx: ContextDep, principal: Scanner, response: Response,
                idempotency_key: IdempotencyKey = None) -> dict:
    return run_write(
        db=db, cache=ctx.cache, principal=principal, key=pick_key(body.scan_id, idempotency_key),
        operation="scan-parent", request=body.model_dump(exclude={"scan_id"}), response=response,
        action=lambda session: service.record_parent_scan(session=session, ctx=ctx, principal=principal,
                                                          raw_qr=body.qr_id, area=body.dispatch_area))


@router.post("/child", response_model=ScanResult)
def scan_child(body: ChildScanIn, db: DbDep, ctx: ContextDep, principal: Scanner, response: Response,
               idempotency_key: IdempotencyKey = None) -> dict:
    return run_write(
        db=db, cache=ctx.cache, principal=principal, key=pick_key(body.scan_id, idempotency_key),
        operation="scan-child", request=body.model_dump(exclude={"scan_id"}), response=response,
        action=lambda session: service.record_child_scan(session=session, ctx=ctx, principal=principal,
                                                         raw_parent=body.parent_qr, raw_child=body.child_qr))


@router.get("", response_model=Page[ScanOut])
def scan_history(
    db: DbDep,
    principal: Anyone,
    limit: Limit = 50,
    cursor: Cursor = None,
    kind: ScanKind | None = None,
    dispatch_area: Area = None,
    username: Username = None,
    qr: Annotated[str | None, Query(max_length=64, description="scans of this bag, as parent or child")] = None,
    created_from: Since = None,
    created_to: Until = None,
) -> Page[ScanOut]:
    with db.session(read_only=True) as session:
        return service.list_scans(session=session, principal=principal, limit=limit, cursor=cursor, qr=qr,
                                  kind=kind, area=dispatch_area, username=username,
                                  created_from=created_from, created_to=created_to)
