"""Billing tables: bills, the parent bags loaded onto them (a parent on at most one bill, by a unique key), each
bill's history, the per-day counter of generated codes, and the outbox of marks scanning must still clear."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, SmallInteger, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.tally import Counted, Tally, Term


class Base(DeclarativeBase):
    pass


class Bill(Base):
    __tablename__ = "bills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bill_id: Mapped[str] = mapped_column(String(32))
    bill_key: Mapped[str] = mapped_column(String(32), unique=True)  # upper-cased: unique case-insensitively
    description: Mapped[str | None] = mapped_column(String(500), nullable=True)
    destination: Mapped[str | None] = mapped_column(String(200), nullable=True)
    vehicle_number: Mapped[str | None] = mapped_column(String(32), nullable=True)
    capacity: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(String(16))
    # Parents on the bill, counting those still being added (a slot is claimed before scanning is asked), so
    # the capacity check is one conditional UPDATE of this row and holds under parallel adds.
    linked_count: Mapped[int] = mapped_column(Integer, default=0)
    expected_weight_kg: Mapped[int] = mapped_column(Integer, default=0)  # the loaded parents' full weights
    actual_weight_kg: Mapped[int] = mapped_column(Integer, default=0)  # their children, as last counted
    counted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_by: Mapped[str] = mapped_column(String(32))
    created_by_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        CheckConstraint("capacity BETWEEN 1 AND 500", name="ck_bills_capacity"),
        CheckConstraint("status IN ('new', 'processing', 'completed')", name="ck_bills_status"),
        CheckConstraint("linked_count BETWEEN 0 AND capacity", name="ck_bills_linked"),
        Index("ix_bills_created_at", "created_at"),
        Index("ix_bills_status_id", "status", "id"),
        Index("ix_bills_created_by_id", "created_by", "id"),
    )


class BillParent(Base):
    """A parent on a bill. `state` is 'pending' from the moment its slot is claimed until scanning has marked
    the parent as billed, then 'active'. The row's id is the link scanning's mark carries, so a clear for an
    earlier link can never remove a later one (services/billing/marks.py)."""

    __tablename__ = "bill_parents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bill_pk: Mapped[int] = mapped_column(ForeignKey("bills.id", ondelete="CASCADE"), index=True)
    parent_qr: Mapped[str] = mapped_column(String(32), unique=True)
    state: Mapped[str] = mapped_column(String(8), default="active")
    capacity: Mapped[int] = mapped_column(SmallInteger)
    child_count: Mapped[int] = mapped_column(Integer)
    added_by: Mapped[str] = mapped_column(String(32))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("state IN ('pending', 'active')", name="ck_bill_parents_state"),
        Index("ix_bill_parents_state_added_at", "state", "added_at"),
        {"sqlite_autoincrement": True},  # ids are never reused: a link names one add for ever
    )


class BillEvent(Base):
    """A bill's history: who did what, when. Kept after the bill is deleted (no foreign key)."""

    __tablename__ = "bill_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bill_pk: Mapped[int] = mapped_column(Integer)
    bill_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(12))
    parent_qr: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    username: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("kind IN ('create', 'add', 'remove', 'complete', 'reopen', 'edit', 'delete')",
                        name="ck_bill_events_kind"),
        Index("ix_bill_events_bill_pk_id", "bill_pk", "id"),
        Index("ix_bill_events_created_at", "created_at"),
    )


class BillDayCounter(Base):
    """The last number handed out for generated codes of one local day (BILL_YYYYMMDD_NNNN)."""

    __tablename__ = "bill_day_counters"

    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


class MarkOutbox(Base):
    """A mark scanning still holds and must clear (a parent removed from a bill, a bill deleted, an add that
    failed after marking): retried until scanning confirms, so removing works while scanning is down."""

    __tablename__ = "mark_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_qr: Mapped[str] = mapped_column(String(32))
    bill_id: Mapped[str] = mapped_column(String(32))
    link: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_mark_outbox_next_attempt_at", "next_attempt_at"),)


# idempotent_requests (Idempotency-Key and the first answer) is shared.unit_of_work.IDEMPOTENT_REQUESTS.


# What the dashboard's counts of bills are made of (shared.tally; services/billing/stats.py reads them). Bills have
# no area. A bill counts as completed on the day of its completed_at (cleared by a reopen). A metric's name is its
# own: a status's count and a per-day count share the totals table.
TALLY = Tally(counted=(Counted("bills", (
    Term("'status_' || {r}.status"),
    Term("'created'", at="{r}.created_at"),
    Term("'completed'", at="{r}.completed_at"),
)),))
