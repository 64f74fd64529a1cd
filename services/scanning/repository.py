"""SQL of the scanning service's reads and its delete (the scan writes are in scan_sql.py). Every list is
keyset-paginated on an index; no rules live here."""
from __future__ import annotations

from datetime import datetime
from typing import Any, AsyncIterator

from sqlalchemy import Select, and_, bindparam, delete, or_, select

from services.scanning.models import Bag, Scan
from shared.db import Conn, Row
from shared.unit_of_work import UnitOfWork

bags, scans = Bag.__table__, Scan.__table__
parent = bags.alias("parent")
child = bags.alias("child")


def relatives_query(qr) -> Select:
    """One row per child (or one row) of: the bag, its parent's QR, a child's QR."""
    return (select(bags, parent.c.qr_id.label("parent_qr"), child.c.qr_id.label("child_qr"))
            .outerjoin(parent, parent.c.id == bags.c.parent_id)
            .outerjoin(child, child.c.parent_id == bags.c.id)
            .where(bags.c.qr_id == qr)
            .order_by(child.c.id))


# Built once: the hot lookup path skips rebuilding the statement and its cache key on every call.
_RELATIVES = relatives_query(bindparam("qr"))


async def bag_with_relatives(conn: Conn, qr: str) -> tuple[Row | None, list[str]]:
    """A bag (with its parent's QR as `parent_qr`) and its children's QRs, in one round trip."""
    rows = await conn.rows(_RELATIVES, {"qr": qr})
    if not rows:
        return None, []
    return rows[0], [row["child_qr"] for row in rows if row["child_qr"] is not None]


async def get_bag(conn: Conn, qr: str) -> Row | None:
    """A bag with its parent's QR (`parent_qr`)."""
    query = (select(bags, parent.c.qr_id.label("parent_qr")).outerjoin(parent, parent.c.id == bags.c.parent_id)
             .where(bags.c.qr_id == qr))
    return await conn.row(query)


async def delete_empty_bag(work: UnitOfWork, bag_id: int) -> bool:
    """Delete a parent holding no children or an unlinked child; False when it no longer is one (or is gone).

    The condition is re-checked under the row lock, so a child linked at this moment makes the delete a no-op
    instead of a foreign-key error."""
    empty = or_(and_(bags.c.type == "parent", bags.c.child_count == 0),
                and_(bags.c.type == "child", bags.c.parent_id.is_(None)))
    return await work.execute(delete(bags).where(bags.c.id == bag_id, empty)) == 1


# What a CSV export row holds, in its column order.
EXPORT_COLUMNS = (bags.c.qr_id, bags.c.type, bags.c.status, bags.c.dispatch_area, bags.c.child_count,
                  bags.c.capacity, parent.c.qr_id.label("parent_qr"), bags.c.created_by, bags.c.created_at)


def bags_query(*, after_id: int | None = None, after_qr: str | None = None, limit: int | None = None,
               type_: str | None = None, status: str | None = None, area: str | None = None,
               created_from: datetime | None = None, created_to: datetime | None = None,
               qr_prefix: str | None = None, parent_qr: str | None = None, columns=None) -> Select:
    """Bags, each with its parent's QR: newest first (keyset on id), or — for a QR prefix search — in QR order
    (keyset on qr_id), so the search walks the QR index from the prefix instead of every newer bag.

    `columns` selects the export's plain columns instead of whole rows."""
    query = select(*(columns or (bags, parent.c.qr_id.label("parent_qr")))).outerjoin(
        parent, parent.c.id == bags.c.parent_id)
    if qr_prefix:
        query = query.where(bags.c.qr_id.startswith(qr_prefix, autoescape=True)).order_by(bags.c.qr_id)
        if after_qr is not None:
            query = query.where(bags.c.qr_id > after_qr)
    else:
        query = query.order_by(bags.c.id.desc())
    if after_id is not None:
        query = query.where(bags.c.id < after_id)
    if type_:
        query = query.where(bags.c.type == type_)
    if status:
        query = query.where(bags.c.status == status)
    if area:
        query = query.where(bags.c.dispatch_area == area)
    if created_from:
        query = query.where(bags.c.created_at >= created_from)
    if created_to:
        query = query.where(bags.c.created_at < created_to)
    if parent_qr:
        query = query.where(parent.c.qr_id == parent_qr)
    return query.limit(limit) if limit else query


async def list_bags(conn: Conn, **filters: Any) -> list[Row]:
    return await conn.rows(bags_query(**filters))


async def stream_export_rows(conn: Conn, batch: int = 5000, **filters: Any) -> AsyncIterator[Row]:
    """Every matching bag as a row of EXPORT_COLUMNS, through a server-side cursor: flat memory at any size."""
    async for row in conn.stream(bags_query(columns=EXPORT_COLUMNS, **filters), batch=batch):
        yield row


def scans_query(*, after_id: int | None = None, limit: int | None = None, kind: str | None = None,
                area: str | None = None, username: str | None = None, qr: str | None = None,
                created_from: datetime | None = None, created_to: datetime | None = None) -> Select:
    """Scans newest first, keyset on id."""
    query = select(scans).order_by(scans.c.id.desc())
    if after_id is not None:
        query = query.where(scans.c.id < after_id)
    if kind:
        query = query.where(scans.c.kind == kind)
    if area:
        query = query.where(scans.c.dispatch_area == area)
    if username:
        query = query.where(scans.c.username == username)
    if qr:
        query = query.where((scans.c.parent_qr == qr) | (scans.c.child_qr == qr))
    if created_from:
        query = query.where(scans.c.created_at >= created_from)
    if created_to:
        query = query.where(scans.c.created_at < created_to)
    return query.limit(limit) if limit else query


async def list_scans(conn: Conn, **filters: Any) -> list[Row]:
    return await conn.rows(scans_query(**filters))
