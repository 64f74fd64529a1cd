"""Bag and scan lists (keyset pages, area-scoped for dispatchers) and the streamed CSV export."""
from __future__ import annotations

from typing import Any, AsyncIterator

from services.scanning import repository as repo
from services.scanning.qr import filter_code
from services.scanning.schemas import BagOut, ScanOut
from services.scanning.views import bag_out, weight_kg
from shared.csvstream import csv_chunks
from shared.db import Database
from shared.errors import Forbidden
from shared.pagination import Page, cursor_position, page_of
from shared.security import Principal
from shared.timeutil import as_utc

CSV_COLUMNS = ("qr_id", "type", "status", "dispatch_area", "child_count", "capacity", "weight_kg", "parent_qr",
               "created_by", "created_at")


def scoped_area(principal: Principal, area: str | None) -> str | None:
    """The area a list may show: a dispatcher's own. Asking for another is a 403 naming only the caller's own
    area: decided from the request alone, it says nothing about any bag (an empty page would hide the mistake)."""
    if principal.role != "dispatcher":
        return area.lower() if area else None
    if area and area.lower() != principal.dispatch_area:
        raise Forbidden(f"you dispatch for {principal.dispatch_area!r}; other areas are not yours to see")
    return principal.dispatch_area


async def list_bags(*, db: Database, principal: Principal, limit: int, cursor: str | None, q: str | None,
                    parent_qr: str | None, **filters: Any) -> Page[BagOut]:
    filters["area"] = scoped_area(principal, filters.get("area"))
    prefix = filter_code(q)
    position = {"after_qr": cursor_position(cursor, str)} if prefix else {"after_id": cursor_position(cursor)}
    async with db.read() as conn:
        rows = await repo.list_bags(conn, limit=limit + 1, qr_prefix=prefix, parent_qr=filter_code(parent_qr),
                                    **position, **filters)
    return page_of(rows, limit, item=lambda row: bag_out(row, row["parent_qr"]),
                   key=lambda row: row["qr_id"] if prefix else row["id"])


async def list_scans(*, db: Database, principal: Principal, limit: int, cursor: str | None, qr: str | None,
                     **filters: Any) -> Page[ScanOut]:
    filters["area"] = scoped_area(principal, filters.get("area"))
    async with db.read() as conn:
        rows = await repo.list_scans(conn, after_id=cursor_position(cursor), limit=limit + 1, qr=filter_code(qr),
                                     **filters)
    return page_of(rows, limit, item=lambda scan: ScanOut.model_validate(dict(scan)), key=lambda scan: scan["id"])


async def export_csv(db: Database, filters: dict[str, Any]) -> AsyncIterator[str]:
    """Every matching bag as CSV text, from a server-side cursor (shared.csvstream: flat memory)."""
    async def rows() -> AsyncIterator[tuple]:
        # A bulk report may come from the replica (when its lag is within db_read_max_lag): it trails by that at most.
        async with db.read(replica=True) as conn:  # the cursor runs in a transaction of its own: one snapshot
            async for row in repo.stream_export_rows(conn, **filters):
                qr, type_, status, area, count, capacity, parent_qr, by, at = row.values()
                yield (qr, type_, status, area, count, "" if capacity is None else capacity,
                       weight_kg(type_, count), parent_qr or "", by, as_utc(at).isoformat())

    async for chunk in csv_chunks(CSV_COLUMNS, rows()):
        yield chunk
