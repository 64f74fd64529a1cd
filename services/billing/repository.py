"""SQL of the billing service. Every write that a race could break is one conditional statement on the bill's row
(the capacity claim, complete, reopen, a capacity edit), so concurrent requests queue on that row and each sees
the other's result; no rules live here."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, AsyncIterator

from sqlalchemy import Select, and_, bindparam, case, delete, func, insert, literal_column, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from services.billing.models import Bill, BillDayCounter, BillEvent, BillParent
from shared.db import Conn, Row
from shared.security import Principal
from shared.timeutil import utcnow
from shared.unit_of_work import UnitOfWork

bills, parents, events, counters = Bill.__table__, BillParent.__table__, BillEvent.__table__, BillDayCounter.__table__

# What ?q= searches; the same expression as PostgreSQL's trigram index (billing migration 0002, ix_bills_search).
SEARCH_TEXT = literal_column("lower(bills.bill_key || ' ' || coalesce(bills.description, '') || ' ' || "
                             "coalesce(bills.destination, '') || ' ' || coalesce(bills.vehicle_number, ''))")


async def next_day_number(work: UnitOfWork, day: str) -> int:
    """The next number of a day's generated codes: one upsert on that day's counter row."""
    dialect = postgresql if work.dialect == "postgresql" else sqlite
    statement = dialect.insert(counters).values(day=day, last=1)
    statement = statement.on_conflict_do_update(index_elements=[counters.c.day],
                                                set_={"last": counters.c.last + 1}).returning(counters.c.last)
    return await work.scalar(statement)


async def insert_bill(work: UnitOfWork, **values: Any) -> int:
    now = utcnow()
    return await work.scalar(insert(bills).values(linked_count=0, expected_weight_kg=0, actual_weight_kg=0,
                                                  status="new", created_at=now, updated_at=now, **values)
                             .returning(bills.c.id))


# The reads below are built by *_query functions, so tests/billing/test_scale.py plans exactly what runs.

def bill_query(key) -> Select:
    return select(bills).where(bills.c.bill_key == key)


def parents_query(bill_pk) -> Select:
    """A bill's parents in the order they were loaded (pending ones included, with their state)."""
    return select(parents).where(parents.c.bill_pk == bill_pk).order_by(parents.c.id)


def holder_query(qr) -> Select:
    """The bill holding (or being loaded with) a parent, with the parent's row state."""
    return (select(bills.c.bill_id, bills.c.id, parents.c.state)
            .join(parents, parents.c.bill_pk == bills.c.id).where(parents.c.parent_qr == qr))


async def get_bill(conn: Conn | UnitOfWork, key: str) -> Row | None:
    return await conn.row(bill_query(key))


def parent_bill_query(qr) -> Select:
    """holder_query with what a lookup shows of the bill: one probe of bill_parents' unique parent_qr."""
    return holder_query(qr).add_columns(bills.c.status, bills.c.capacity, bills.c.linked_count, parents.c.added_at)


async def parent_bill(conn: Conn, qr: str) -> Row | None:
    return await conn.row(parent_bill_query(qr))


def events_feed_query(*, newer_than: int | None = None, limit: int) -> Select:
    """Every bill's history, newest first (the primary key read backwards), only after `newer_than` if given."""
    query = select(events).order_by(events.c.id.desc()).limit(limit)
    return query.where(events.c.id > newer_than) if newer_than is not None else query


async def events_feed(conn: Conn, *, newer_than: int | None, limit: int) -> list[Row]:
    return await conn.rows(events_feed_query(newer_than=newer_than, limit=limit))


def latest_event_query() -> Select:
    """The highest event id: the primary key's end."""
    return select(func.max(events.c.id))


async def latest_event_id(conn: Conn) -> int:
    return await conn.scalar(latest_event_query()) or 0


async def bill_parents(conn: Conn, bill_pk: int) -> list[Row]:
    return await conn.rows(parents_query(bill_pk))


async def holder_of(conn: Conn | UnitOfWork, qr: str) -> Row | None:
    return await conn.row(holder_query(qr))


_holder = parents.alias("holder")
_holding_bill = bills.alias("holding_bill")
# An add's first read, built once: the bill, and which bill (if any) holds the parent, in one round trip.
_BILL_AND_HOLDER = (select(bills, _holding_bill.c.bill_id.label("holder_bill_id"), _holder.c.state.label("holder_state"))
                    .select_from(bills.outerjoin(_holder, _holder.c.parent_qr == bindparam("qr"))
                                 .outerjoin(_holding_bill, _holding_bill.c.id == _holder.c.bill_pk))
                    .where(bills.c.bill_key == bindparam("code")))


async def bill_and_holder(conn: Conn, code: str, qr: str) -> Row | None:
    """The bill (None if there is none), with `holder_bill_id` and `holder_state` of the parent's row if any."""
    return await conn.row(_BILL_AND_HOLDER, {"code": code, "qr": qr})


def _pending_count(bill_pk) -> Any:
    return (select(func.count()).select_from(parents)
            .where(parents.c.bill_pk == bill_pk, parents.c.state == "pending").scalar_subquery())


# An add's two writes on PostgreSQL, each ONE statement (autocommit, the direct driver path); SQLite, which has no
# data-modifying CTEs, runs the same steps as a short transaction. Casts fix each parameter's type.
_CLAIM = text("""
WITH claimed AS (
    UPDATE bills SET linked_count = linked_count + 1, status = 'processing', updated_at = now()
    WHERE id = CAST(:bill_pk AS integer) AND status <> 'completed' AND linked_count < capacity
    RETURNING id)
INSERT INTO bill_parents (bill_pk, parent_qr, state, capacity, child_count, added_by, added_at)
SELECT id, CAST(:qr AS varchar), 'pending', 0, 0, CAST(:added_by AS varchar), now() FROM claimed
RETURNING id""")
_ACTIVATE = text("""
WITH activated AS (
    UPDATE bill_parents SET state = 'active', capacity = CAST(:capacity AS smallint),
                            child_count = CAST(:child_count AS integer)
    WHERE id = CAST(:link AS integer) AND state = 'pending'
    RETURNING bill_pk),
bumped AS (
    UPDATE bills SET expected_weight_kg = expected_weight_kg + CAST(:capacity AS integer),
                     actual_weight_kg = actual_weight_kg + CAST(:child_count AS integer), updated_at = now(),
                     counted_at = COALESCE(counted_at, now())
    WHERE id = (SELECT bill_pk FROM activated)
    RETURNING bills.*),
recorded AS (
    INSERT INTO bill_events (bill_pk, bill_id, kind, parent_qr, detail, user_id, username, created_at)
    SELECT id, bill_id, 'add', CAST(:qr AS varchar), CAST(:detail AS text), CAST(:user_id AS integer),
           CAST(:username AS varchar), now()
    FROM bumped)
SELECT * FROM bumped""")


async def claim(work: UnitOfWork, bill_pk: int, qr: str, added_by: str) -> int | None:
    """Take one of the bill's free slots (unless it is completed or full) and write the parent's row, 'pending',
    before scanning is asked; the row's id (the link the mark carries), or None when there was no slot. A parent
    already on a bill is an IntegrityError (the unique parent_qr: one bill per parent), which undoes the claim."""
    if work.one_statement:
        return await work.scalar(_CLAIM, {"bill_pk": bill_pk, "qr": qr, "added_by": added_by})
    if await work.execute(
            update(bills).where(bills.c.id == bill_pk, bills.c.status != "completed",
                                bills.c.linked_count < bills.c.capacity)
            .values(linked_count=bills.c.linked_count + 1, status="processing", updated_at=utcnow())) != 1:
        return None
    return await work.scalar(insert(parents).values(bill_pk=bill_pk, parent_qr=qr, state="pending", capacity=0,
                                                    child_count=0, added_by=added_by, added_at=utcnow())
                             .returning(parents.c.id))


async def activate(work: UnitOfWork, link: int, bill: Row | dict, qr: str, capacity: int, child_count: int,
                   principal: Principal | None) -> Row | None:
    """The mark landed: the pending row counts, with the parent's full and current weight, and the bill's history
    says so; the bill as it is now, or None when the row is no longer pending (the reconciler released it)."""
    if work.one_statement:
        return await work.row(_ACTIVATE, {
            "link": link, "capacity": capacity, "child_count": child_count, "qr": qr,
            "detail": json.dumps({"capacity": capacity, "child_count": child_count}),
            "user_id": principal and principal.user_id, "username": principal.username if principal else "system"})
    if await work.execute(update(parents).where(parents.c.id == link, parents.c.state == "pending")
                          .values(state="active", capacity=capacity, child_count=child_count)) != 1:
        return None
    await work.execute(update(bills).where(bills.c.id == bill["id"]).values(
        expected_weight_kg=bills.c.expected_weight_kg + capacity, actual_weight_kg=bills.c.actual_weight_kg + child_count,
        updated_at=utcnow(), counted_at=func.coalesce(bills.c.counted_at, utcnow())))
    await record(work, bill, "add", principal, parent_qr=qr, detail={"capacity": capacity, "child_count": child_count})
    return await work.row(bill_query(bill["bill_key"]))


def _after_leaving(left: Any) -> dict[str, Any]:
    """The bill's status once a parent has left it: no parents, new; otherwise processing (a completed bill
    reopens: it no longer holds what completed it)."""
    return {"status": case((left == 0, "new"), else_="processing"), "completed_at": None}


async def release_pending(work: UnitOfWork, link: int, bill_pk: int) -> bool:
    """The add failed after claiming: drop its row and give the slot back."""
    if await work.execute(delete(parents).where(parents.c.id == link, parents.c.state == "pending")) != 1:
        return False
    left = bills.c.linked_count - 1
    await work.execute(update(bills).where(bills.c.id == bill_pk).values(
        linked_count=left, updated_at=utcnow(),
        status=case((bills.c.status == "completed", bills.c.status), (left == 0, "new"), else_=bills.c.status)))
    return True


async def remove_parent(work: UnitOfWork, bill_pk: int, qr: str) -> Row | None:
    """Take an active parent off the bill and recalculate; the removed row, or None if it is not on it."""
    row = await work.row(delete(parents).where(parents.c.bill_pk == bill_pk, parents.c.parent_qr == qr,
                                               parents.c.state == "active").returning(parents))
    if row is None:
        return None
    left = bills.c.linked_count - 1
    await work.execute(update(bills).where(bills.c.id == bill_pk).values(
        linked_count=left, expected_weight_kg=bills.c.expected_weight_kg - row["capacity"],
        actual_weight_kg=bills.c.actual_weight_kg - row["child_count"], updated_at=utcnow(), **_after_leaving(left)))
    return row


async def complete(work: UnitOfWork, bill_pk: int) -> bool:
    """Completed when it holds at least one parent, all its slots are filled, and no add is still in flight."""
    return await work.execute(
        update(bills).where(bills.c.id == bill_pk, bills.c.status != "completed", bills.c.linked_count >= 1,
                            bills.c.linked_count >= bills.c.capacity, _pending_count(bills.c.id) == 0)
        .values(status="completed", completed_at=utcnow(), updated_at=utcnow())) == 1


async def reopen(work: UnitOfWork, bill_pk: int) -> bool:
    return await work.execute(update(bills).where(bills.c.id == bill_pk, bills.c.status == "completed")
                              .values(status="processing", completed_at=None, updated_at=utcnow())) == 1


async def edit(work: UnitOfWork, bill_pk: int, changes: dict[str, Any]) -> bool:
    """Apply `changes`; a new capacity never below what is linked (checked in the statement), and raising the
    capacity of a completed bill reopens it (it is no longer full)."""
    values: dict[str, Any] = {**changes, "updated_at": utcnow()}
    condition = [bills.c.id == bill_pk]
    if "capacity" in changes:
        capacity = changes["capacity"]
        condition.append(bills.c.linked_count <= capacity)
        raised = and_(bills.c.status == "completed", bills.c.capacity < capacity)
        values["status"] = case((raised, "processing"), else_=bills.c.status)
        values["completed_at"] = case((raised, None), else_=bills.c.completed_at)
    return await work.execute(update(bills).where(*condition).values(**values)) == 1


async def delete_bill(work: UnitOfWork, bill_pk: int) -> list[Row]:
    """Delete the bill; its parent rows go with it (returned, so their marks can be cleared)."""
    gone = await work.rows(delete(parents).where(parents.c.bill_pk == bill_pk).returning(parents))
    await work.execute(delete(bills).where(bills.c.id == bill_pk))
    return gone


async def refresh_counts(work: UnitOfWork, bill_pk: int, counts: dict[str, int]) -> None:
    """Store the children scanning counted now, and the bill's actual weight from them."""
    for qr, count in counts.items():
        await work.execute(update(parents).where(parents.c.bill_pk == bill_pk, parents.c.parent_qr == qr)
                           .values(child_count=count))
    actual = (select(func.coalesce(func.sum(parents.c.child_count), 0))
              .where(parents.c.bill_pk == bill_pk, parents.c.state == "active").scalar_subquery())
    await work.execute(update(bills).where(bills.c.id == bill_pk).values(actual_weight_kg=actual, counted_at=utcnow()))


async def record(work: UnitOfWork, bill: Row | dict, kind: str, principal: Principal | None, *,
                 parent_qr: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """One line of the bill's history."""
    await work.execute(insert(events).values(
        bill_pk=bill["id"], bill_id=bill["bill_id"], kind=kind, parent_qr=parent_qr,
        detail=json.dumps(detail, default=str) if detail else None,
        user_id=principal.user_id if principal else None, username=principal.username if principal else "system",
        created_at=utcnow()))


def history_query(bill_pk, *, after_id: int | None = None, limit: int) -> Select:
    query = select(events).where(events.c.bill_pk == bill_pk)
    if after_id is not None:
        query = query.where(events.c.id > after_id)
    return query.order_by(events.c.id).limit(limit)


async def history(conn: Conn, bill_pk: int, *, after_id: int | None, limit: int) -> list[Row]:
    return await conn.rows(history_query(bill_pk, after_id=after_id, limit=limit))


def _filtered(query, *, status: str | None, created_by: str | None, created_from: datetime | None,
              created_to: datetime | None, q: str | None):
    if status:
        query = query.where(bills.c.status == status)
    if created_by:
        query = query.where(bills.c.created_by == created_by)
    if created_from:
        query = query.where(bills.c.created_at >= created_from)
    if created_to:
        query = query.where(bills.c.created_at < created_to)
    if q:
        pattern = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(SEARCH_TEXT.like(pattern, escape="\\"))
    return query


def bills_query(*, before_id: int | None = None, limit: int, status: str | None = None,
                created_by: str | None = None, created_from: datetime | None = None,
                created_to: datetime | None = None, q: str | None = None) -> Select:
    """A page of bills, newest first, keyset on id (tests/billing/test_scale.py checks its plans)."""
    query = _filtered(select(bills), status=status, created_by=created_by, created_from=created_from,
                      created_to=created_to, q=q)
    if before_id is not None:
        query = query.where(bills.c.id < before_id)
    return query.order_by(bills.c.id.desc()).limit(limit)


async def list_bills(conn: Conn, **page: Any) -> list[Row]:
    return await conn.rows(bills_query(**page))


async def stream_bills(conn: Conn, **filters: Any) -> AsyncIterator[Row]:
    async for row in conn.stream(_filtered(select(bills), **filters).order_by(bills.c.id)):
        yield row


def summary_query(start: datetime, end: datetime) -> Select:
    """Bills created in [start, end), grouped by status and creator, with their counts, bags and weights."""
    return (select(bills.c.status, bills.c.created_by, func.count().label("bills"),
                   func.coalesce(func.sum(bills.c.linked_count), 0).label("bags"),
                   func.coalesce(func.sum(bills.c.expected_weight_kg), 0).label("expected_weight_kg"),
                   func.coalesce(func.sum(bills.c.actual_weight_kg), 0).label("actual_weight_kg"))
            .where(bills.c.created_at >= start, bills.c.created_at < end)
            .group_by(bills.c.status, bills.c.created_by).order_by(bills.c.created_by, bills.c.status))


async def day_summary(conn: Conn, start: datetime, end: datetime) -> list[Row]:
    return await conn.rows(summary_query(start, end))


async def stuck_pending(conn: Conn, before: datetime, limit: int = 500) -> list[Row]:
    return await conn.rows(select(parents.c.id, parents.c.parent_qr, parents.c.bill_pk, bills.c.bill_id)
                           .join(bills, bills.c.id == parents.c.bill_pk)
                           .where(parents.c.state == "pending", parents.c.added_at < before).limit(limit))


async def held_links(conn: Conn, links: list[int]) -> set[int]:
    return {row["id"] for row in await conn.rows(select(parents.c.id).where(parents.c.id.in_(links)))}
