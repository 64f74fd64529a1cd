"""SQL of the scanning service's reads, its delete and the bill marks (the scan writes are in scan_sql.py). Every
list is keyset-paginated on an index; no rules live here."""
from __future__ import annotations

from datetime import datetime
from typing import Any, AsyncIterator

from sqlalchemy import Select, bindparam, delete, or_, select, update

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


async def delete_empty_bag(work: UnitOfWork, qr: str) -> bool:
    """Delete a parent holding no children and on no bill, or an unlinked child; False when it is not one (or is
    gone). A parent never has a parent, a child never children nor a bill, so one condition serves both.

    The condition is re-checked under the row lock, so a child linked or a bill mark set at this moment makes the
    delete a no-op (instead of a foreign-key error, or a billed parent gone)."""
    deletable = (bags.c.qr_id == qr, bags.c.child_count == 0, bags.c.parent_id.is_(None), bags.c.bill_id.is_(None))
    return await work.execute(delete(bags).where(*deletable)) == 1


LINK = bags.c.bill_link.label("link")
MARK = (bags.c.qr_id, bags.c.capacity, bags.c.child_count, bags.c.bill_id, LINK, bags.c.dispatch_area,
        bags.c.billed_at)


async def mark_billed(work: UnitOfWork, qr: str, bill_id: str, link: int, now: datetime) -> Row | None:
    """Mark a parent as on `bill_id` by `link` unless another bill's mark is on it; the parent's MARK columns, or
    None when nothing matched. The same bill again (a retry, or the parent loaded anew) takes the new link and
    time: the mark is always the latest add's."""
    return await work.row(
        update(bags).where(bags.c.qr_id == qr, bags.c.type == "parent",
                           or_(bags.c.bill_id.is_(None), bags.c.bill_id == bill_id))
        .values(bill_id=bill_id, bill_link=link, billed_at=now)
        .returning(*MARK))


async def clear_mark(work: UnitOfWork, qr: str, bill_id: str, link: int) -> None:
    """Take that mark (bill and link) off a parent; another bill's mark, or a later link's, stays."""
    await work.execute(update(bags).where(bags.c.qr_id == qr, bags.c.bill_id == bill_id, bags.c.bill_link == link)
                       .values(bill_id=None, bill_link=None, billed_at=None))


async def parent_counts(conn: Conn, qrs: list[str]) -> list[Row]:
    """What a bill needs of each of these parents, in one lookup on the QR index."""
    return await conn.rows(select(bags.c.qr_id, bags.c.child_count, bags.c.capacity, bags.c.bill_id, LINK)
                           .where(bags.c.qr_id.in_(qrs), bags.c.type == "parent"))


def marks_query(*, limit: int, after_qr: str | None = None, billed_after: datetime | None = None,
                billed_before: datetime | None = None) -> Select:
    """Marked parents in QR order (keyset on qr_id). `bill_id IS NOT NULL` lets a billed_at window read the
    partial index ix_bags_billed_at, which holds only marked parents; the page is sorted from the window's rows."""
    query = (select(bags.c.qr_id, bags.c.bill_id, LINK, bags.c.billed_at).where(bags.c.bill_id.is_not(None))
             .order_by(bags.c.qr_id).limit(limit))
    if after_qr is not None:
        query = query.where(bags.c.qr_id > after_qr)
    if billed_after:
        query = query.where(bags.c.billed_at >= billed_after)
    if billed_before:
        query = query.where(bags.c.billed_at < billed_before)
    return query


async def list_marks(conn: Conn, **filters: Any) -> list[Row]:
    return await conn.rows(marks_query(**filters))


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
