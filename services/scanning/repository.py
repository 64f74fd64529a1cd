"""SQL of the scanning service. Every list is keyset-paginated on an index; no rules live here."""
from __future__ import annotations

from datetime import datetime
from typing import Iterator

from sqlalchemy import Select, bindparam, case, delete, select, update
from sqlalchemy.orm import Session, aliased

from services.scanning.models import Bag, IdempotentRequest, Scan

Parent = aliased(Bag, name="parent")
Child = aliased(Bag, name="child")


def get_bag(session: Session, qr: str) -> Bag | None:
    return session.scalar(select(Bag).where(Bag.qr_id == qr))


def relatives_query(qr) -> Select:
    """One row per child (or one row) of: the bag, its parent's QR, a child's QR."""
    return (select(Bag, Parent.qr_id, Child.qr_id)
            .outerjoin(Parent, Parent.id == Bag.parent_id)
            .outerjoin(Child, Child.parent_id == Bag.id)
            .where(Bag.qr_id == qr)
            .order_by(Child.id))


# Built once: the hot lookup path skips rebuilding the statement and its cache key on every call.
_RELATIVES = relatives_query(bindparam("qr"))


def bag_with_relatives(session: Session, qr: str) -> tuple[Bag | None, str | None, list[str]]:
    """A bag, its parent's QR and its children's QRs, in one round trip (the lookup's cache-miss path)."""
    rows = session.execute(_RELATIVES, {"qr": qr}).all()
    if not rows:
        return None, None, []
    return rows[0][0], rows[0][1], [row[2] for row in rows if row[2] is not None]


def children_qrs(session: Session, parent_id: int) -> list[str]:
    return list(session.scalars(select(Bag.qr_id).where(Bag.parent_id == parent_id).order_by(Bag.id)))


def qr_of(session: Session, bag_id: int) -> str | None:
    return session.scalar(select(Bag.qr_id).where(Bag.id == bag_id))


def insert_bag(session: Session, bag: Bag) -> Bag:
    """Add and flush, so a duplicate QR raises IntegrityError here, inside the caller's transaction."""
    session.add(bag)
    session.flush()
    return bag


def claim_parent_slot(session: Session, parent_id: int, now: datetime) -> tuple[int, str] | None:
    """Count one more child on a parent that has room, completing it at capacity; None when it is full.

    One conditional UPDATE: the row lock it takes serialises concurrent scans of the same parent, and the
    re-checked WHERE clause means two of them can never both take the last slot.
    """
    result = session.execute(
        update(Bag)
        .where(Bag.id == parent_id, Bag.child_count < Bag.capacity)
        .values(child_count=Bag.child_count + 1,
                status=case((Bag.child_count + 1 >= Bag.capacity, "completed"), else_="in_progress"),
                updated_at=now)
        .returning(Bag.child_count, Bag.status)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    return (row[0], row[1]) if row else None


def release_parent_slot(session: Session, parent_id: int, now: datetime) -> tuple[int, str]:
    """One child fewer: a completed parent reopens, an empty one is pending again."""
    result = session.execute(
        update(Bag)
        .where(Bag.id == parent_id, Bag.child_count > 0)
        .values(child_count=Bag.child_count - 1,
                status=case((Bag.child_count - 1 == 0, "pending"), else_="in_progress"),
                updated_at=now)
        .returning(Bag.child_count, Bag.status)
        .execution_options(synchronize_session=False)
    )
    row = result.one()
    return row[0], row[1]


def link_child(session: Session, child_id: int, parent_id: int, *, area: str, user_id: int, now: datetime) -> bool:
    """Link an unlinked child; False if someone linked it first."""
    result = session.execute(
        update(Bag)
        .where(Bag.id == child_id, Bag.parent_id.is_(None))
        .values(parent_id=parent_id, dispatch_area=area, status="completed", linked_by=user_id, linked_at=now,
                updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def unlink_child(session: Session, child_id: int, parent_id: int, now: datetime) -> bool:
    result = session.execute(
        update(Bag)
        .where(Bag.id == child_id, Bag.parent_id == parent_id)
        .values(parent_id=None, status="pending", linked_by=None, linked_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def delete_bag(session: Session, bag_id: int) -> None:
    session.execute(delete(Bag).where(Bag.id == bag_id))


def add_scan(session: Session, scan: Scan) -> None:
    session.add(scan)


# What a CSV export row holds, in its column order.
EXPORT_COLUMNS = (Bag.qr_id, Bag.type, Bag.status, Bag.dispatch_area, Bag.child_count, Bag.capacity,
                  Parent.qr_id.label("parent_qr"), Bag.created_by, Bag.created_at)


def bags_query(*, after_id: int | None = None, after_qr: str | None = None, limit: int | None = None,
               type_: str | None = None, status: str | None = None, area: str | None = None,
               created_from: datetime | None = None, created_to: datetime | None = None,
               qr_prefix: str | None = None, parent_qr: str | None = None, columns=None) -> Select:
    """Bags, each with its parent's QR: newest first (keyset on id), or — for a QR prefix search — in QR order
    (keyset on qr_id), so the search walks the QR index from the prefix instead of every newer bag.

    `columns` selects plain columns instead of Bag objects (the export: no ORM object per row)."""
    query = select(*(columns or (Bag, Parent.qr_id.label("parent_qr")))).outerjoin(Parent, Parent.id == Bag.parent_id)
    if qr_prefix:
        query = query.where(Bag.qr_id.startswith(qr_prefix, autoescape=True)).order_by(Bag.qr_id)
        if after_qr is not None:
            query = query.where(Bag.qr_id > after_qr)
    else:
        query = query.order_by(Bag.id.desc())
    if after_id is not None:
        query = query.where(Bag.id < after_id)
    if type_:
        query = query.where(Bag.type == type_)
    if status:
        query = query.where(Bag.status == status)
    if area:
        query = query.where(Bag.dispatch_area == area)
    if created_from:
        query = query.where(Bag.created_at >= created_from)
    if created_to:
        query = query.where(Bag.created_at < created_to)
    if parent_qr:
        query = query.where(Parent.qr_id == parent_qr)
    return query.limit(limit) if limit else query


def list_bags(session: Session, **filters) -> list[tuple[Bag, str | None]]:
    return [(row[0], row[1]) for row in session.execute(bags_query(**filters))]


def stream_export_rows(session: Session, batch: int = 5000, **filters) -> Iterator[tuple]:
    """Every matching bag as a row of EXPORT_COLUMNS, through a server-side cursor: flat memory at any size."""
    query = bags_query(columns=EXPORT_COLUMNS, **filters).execution_options(yield_per=batch, stream_results=True)
    yield from session.execute(query)


def scans_query(*, after_id: int | None = None, limit: int | None = None, kind: str | None = None,
                area: str | None = None, username: str | None = None, qr: str | None = None,
                created_from: datetime | None = None, created_to: datetime | None = None) -> Select:
    """Scans newest first, keyset on id."""
    query = select(Scan).order_by(Scan.id.desc())
    if after_id is not None:
        query = query.where(Scan.id < after_id)
    if kind:
        query = query.where(Scan.kind == kind)
    if area:
        query = query.where(Scan.dispatch_area == area)
    if username:
        query = query.where(Scan.username == username)
    if qr:
        query = query.where((Scan.parent_qr == qr) | (Scan.child_qr == qr))
    if created_from:
        query = query.where(Scan.created_at >= created_from)
    if created_to:
        query = query.where(Scan.created_at < created_to)
    return query.limit(limit) if limit else query


def list_scans(session: Session, **filters) -> list[Scan]:
    return list(session.scalars(scans_query(**filters)))


def get_idempotent(session: Session, user_id: int, key: str) -> IdempotentRequest | None:
    return session.get(IdempotentRequest, (user_id, key))


def save_idempotent(session: Session, record: IdempotentRequest) -> None:
    session.add(record)
    session.flush()


def purge_idempotent(session: Session, before: datetime) -> int:
    """Forget idempotency keys older than `before` (retries come within seconds, not days)."""
    return session.execute(delete(IdempotentRequest).where(IdempotentRequest.created_at < before)).rowcount
