"""Scanning tables: bags (parents and children, one parent per child by construction) and scans."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, SmallInteger,
                        String, func, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.tally import Counted, Tally, Term

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigId = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    pass


class Bag(Base):
    __tablename__ = "bags"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    qr_id: Mapped[str] = mapped_column(String(32), unique=True)
    type: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    dispatch_area: Mapped[str] = mapped_column(String(64))
    capacity: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    child_count: Mapped[int] = mapped_column(Integer, default=0)
    # A child's one parent is this column: a second parent cannot even be written down.
    parent_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("bags.id", ondelete="RESTRICT"), nullable=True)
    linked_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    linked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The code of the bill holding a parent, set by billing before it commits the bill (services/scanning/marks.py).
    bill_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    bill_link: Mapped[int | None] = mapped_column(BigId, nullable=True)  # billing's row: the one mark a clear undoes
    billed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When a parent last became completed (NULL while it is not): kept by a trigger on every write, COPY included
    # (migration 0004), so "parents completed that day" can be counted and checked against the table.
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        CheckConstraint("type IN ('parent', 'child')", name="ck_bags_type"),
        CheckConstraint("status IN ('pending', 'in_progress', 'completed')", name="ck_bags_status"),
        CheckConstraint("type = 'child' OR parent_id IS NULL", name="ck_bags_only_children_have_parents"),
        CheckConstraint("child_count >= 0 AND child_count <= COALESCE(capacity, 0)", name="ck_bags_capacity"),
        CheckConstraint("type = 'parent' OR bill_id IS NULL", name="ck_bags_only_parents_are_billed"),
        Index("ix_bags_parent_id", "parent_id"),
        Index("ix_bags_area_id", "dispatch_area", "id"),
        Index("ix_bags_type_status_id", "type", "status", "id"),
        Index("ix_bags_created_at", "created_at"),
        Index("ix_bags_billed_at", "billed_at", postgresql_where=text("bill_id IS NOT NULL"),
              sqlite_where=text("bill_id IS NOT NULL")),
    )


class Scan(Base):
    """What a person scanned, when: history, not state (a deleted bag's scans remain)."""

    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8))
    parent_qr: Mapped[str] = mapped_column(String(32))
    child_qr: Mapped[str | None] = mapped_column(String(32), nullable=True)
    dispatch_area: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(32))
    repeat: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("kind IN ('parent', 'child', 'unlink')", name="ck_scans_kind"),
        Index("ix_scans_area_id", "dispatch_area", "id"),
        Index("ix_scans_parent_qr_id", "parent_qr", "id"),
        Index("ix_scans_child_qr_id", "child_qr", "id"),
        Index("ix_scans_username_id", "username", "id"),
        Index("ix_scans_created_at", "created_at"),
    )


# idempotent_requests (scan_id / Idempotency-Key and the first answer) is shared.unit_of_work.IDEMPOTENT_REQUESTS.


# What the dashboard's counts are made of (shared.tally; services/scanning/stats.py reads them), per dispatch area.
# Billed counts are the parents whose mark was set on that day; the weight is theirs, 1 kg a child.
_AREA, _PARENT = "{r}.dispatch_area", "{r}.type = 'parent'"
_BILLED = "{r}.bill_id IS NOT NULL"
TALLY = Tally(
    counted=(
        Counted("bags", (
            Term("'parents_' || {r}.status", when=_PARENT, area=_AREA),
            Term("'children'", when="{r}.type = 'child'", area=_AREA),
            Term("'linked_children'", when="{r}.type = 'child' AND {r}.parent_id IS NOT NULL", area=_AREA),
            Term("'completed_parents'", when=f"{_PARENT} AND {{r}}.status = 'completed'", area=_AREA,
                 at="{r}.completed_at"),
            Term("'billed_parents'", when=_BILLED, area=_AREA, at="{r}.billed_at"),
            Term("'billed_weight_kg'", when=_BILLED, area=_AREA, at="{r}.billed_at", n="{r}.child_count"),
        )),
        Counted("scans", (Term("'scans'", area=_AREA, at="{r}.created_at"),)),
    ),
    per_minute=frozenset({"scans"}),
)
