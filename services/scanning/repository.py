"""SQL of the scanning service's reads, its delete and the bill marks (the scan writes are in scan_sql.py). Every
list is keyset-paginated on an index; no rules live here."""
from __future__ import annotations

from datetime import datetime
from typing import Any, AsyncIterator

from sqlalchemy import Select, bindparam, delete, func, or_, select, union_all, update

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


def feed_query(*, newer_than: int | None = None, area: str | None = None, limit: int) -> Select:
    """The newest `limit` scans (of one area), only those after `newer_than` if given, newest first.

    An area's page picks its ids off ix_scans_area_id alone (an index-only scan, `limit` entries), then reads
    those rows: asked as one plain query, the planner walks the primary key back and filters, which reads every
    newer scan of the other areas — 100,000 rows for an area that went quiet half a table ago
    (tests/scanning/test_feed.py)."""
    def newest(*columns) -> Select:
        query = select(*columns)
        if area:
            query = query.where(scans.c.dispatch_area == area)
        if newer_than is not None:
            query = query.where(scans.c.id > newer_than)
        return query.order_by(scans.c.id.desc()).limit(limit)

    if not area:  # the primary key, read backwards, is the page itself
        return newest(scans)
    return select(scans).where(scans.c.id.in_(newest(scans.c.id).scalar_subquery())).order_by(scans.c.id.desc())


async def scan_feed(conn: Conn, **page: Any) -> list[Row]:
    return await conn.rows(feed_query(**page))


def latest_scan_query(*, area: str | None = None) -> Select:
    """The highest scan id (of one area): the end of the primary key, or of ix_scans_area_id, read backwards."""
    query = select(func.max(scans.c.id))
    return query.where(scans.c.dispatch_area == area) if area else query


async def latest_scan_id(conn: Conn, *, area: str | None = None) -> int:
    return await conn.scalar(latest_scan_query(area=area)) or 0


def last_scans_query(qr, *, area=None, limit) -> Select:
    """The last `limit` scans of a QR, as parent or as child, newest first: one arm per index
    (ix_scans_parent_qr_id, ix_scans_child_qr_id), each read backwards for at most `limit` entries, then the two
    short lists merged. An OR of the two columns would read every scan of the bag instead. A row never matches
    both arms: a QR is a parent's or a child's, never both."""
    def arm(column) -> Select:
        query = select(scans).where(column == qr)
        if area is not None:
            query = query.where(scans.c.dispatch_area == area)
        return select(query.order_by(scans.c.id.desc()).limit(limit).subquery())

    both = union_all(arm(scans.c.parent_qr), arm(scans.c.child_qr)).subquery()
    return select(both).order_by(both.c.id.desc()).limit(limit)


# Built once (a union of subqueries costs ~1 ms of CPU to build and key per call): with and without the area.
_LAST_SCANS = {False: last_scans_query(bindparam("qr"), limit=bindparam("limit")),
               True: last_scans_query(bindparam("qr"), area=bindparam("area"), limit=bindparam("limit"))}


async def last_scans(conn: Conn, qr: str, *, area: str | None = None, limit: int) -> list[Row]:
    return await conn.rows(_LAST_SCANS[area is not None], {"qr": qr, "area": area, "limit": limit})


# The composed lookup's bag query: relatives_query's rows, each also carrying the parent's own columns
# (as parent_<column>), so a child's parent comes in the same round trip.
PARENT_VIEW_COLUMNS = ("type", "status", "dispatch_area", "child_count", "capacity", "created_by", "created_at")


def bag_parent_children_query(qr) -> Select:
    """One row per child (or one row) of: the bag, its parent's QR and columns, a child's QR."""
    return relatives_query(qr).add_columns(*(parent.c[name].label(f"parent_{name}") for name in PARENT_VIEW_COLUMNS))


_BAG_PARENT_CHILDREN = bag_parent_children_query(bindparam("qr"))


async def bag_parent_children(conn: Conn, qr: str) -> tuple[Row | None, dict[str, Any] | None, list[str]]:
    """A bag (with `parent_qr`), its parent's row (None when it has none) and its children's QRs: one round trip."""
    rows = await conn.rows(_BAG_PARENT_CHILDREN, {"qr": qr})
    if not rows:
        return None, None, []
    bag = rows[0]
    parent_row = None if bag["parent_qr"] is None else {
        "qr_id": bag["parent_qr"], **{name: bag[f"parent_{name}"] for name in PARENT_VIEW_COLUMNS}}
    return bag, parent_row, [row["child_qr"] for row in rows if row["child_qr"] is not None]
