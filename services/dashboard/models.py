"""Dashboard tables (its own database; no other service reads them): the last good value of every aggregate and
daily series it shows, so an answer survives its sources being away and a Redis restart."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Part(Base):
    """One part of a dashboard answer (services/dashboard/parts.py): written after each successful refresh of a
    stats, activity or trends part; a failed refresh notes when and why on the row it leaves standing."""

    __tablename__ = "parts"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)  # e.g. scan-stats:jaipur, bill-trends:14
    source: Mapped[str] = mapped_column(String(16))  # scanning | billing
    payload: Mapped[str] = mapped_column(Text)  # the source's answer, as JSON text
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # when the source computed it
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # when the dashboard fetched it
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    failure: Mapped[str | None] = mapped_column(String(500), nullable=True)
