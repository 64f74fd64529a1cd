"""Billing tables: bills and the parent bags loaded onto them (a parent on at most one bill, by a unique key)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, SmallInteger, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


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
    created_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BillParent(Base):
    __tablename__ = "bill_parents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bill_pk: Mapped[int] = mapped_column(ForeignKey("bills.id", ondelete="CASCADE"), index=True)
    parent_qr: Mapped[str] = mapped_column(String(32), unique=True)
    capacity: Mapped[int] = mapped_column(SmallInteger)
    child_count: Mapped[int] = mapped_column(Integer)
    added_by: Mapped[str] = mapped_column(String(32))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
