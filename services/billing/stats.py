"""What the dashboard counts of billing (api/stats.py): bills by status, created and completed per local day —
read from the tally the database keeps (models.TALLY, see shared.tally), never by counting bills per request."""
from __future__ import annotations

from datetime import date, datetime, timedelta

from pydantic import BaseModel, Field

from services.billing.models import TALLY
from services.billing.service import BillingContext
from shared.timeutil import UtcDateTime, utcnow

STATUSES = ("new", "processing", "completed")


class BillCounts(BaseModel):
    new: int
    processing: int
    completed: int
    total: int


class BillsToday(BaseModel):
    created: int = Field(description="bills created today (local day) that still exist")
    completed: int = Field(description="bills completed today and not reopened since")


class BillStats(BaseModel):
    as_of: UtcDateTime = Field(description="when these counts were read (exact as of then)")
    day: date = Field(description="today, in `timezone`")
    timezone: str
    bills: BillCounts
    today: BillsToday


class BillTrendDay(BaseModel):
    day: date
    created: int
    completed: int


class BillTrends(BaseModel):
    as_of: UtcDateTime
    timezone: str
    days: list[BillTrendDay] = Field(description="one per day, oldest first, ending today")


def _today(ctx: BillingContext) -> tuple[datetime, date]:
    now = utcnow()
    return now, now.astimezone(ctx.settings.zone).date()


async def stats(*, ctx: BillingContext) -> BillStats:
    """Bills by status, and those created and completed today."""
    now, today = _today(ctx)
    async with ctx.db.read() as conn:
        counts = await TALLY.read(conn, ctx.settings.zone, days=(today, today))
    statuses = {status: counts.total(f"status_{status}") for status in STATUSES}
    return BillStats(as_of=now, day=today, timezone=ctx.settings.timezone,
                     bills=BillCounts(**statuses, total=sum(statuses.values())),
                     today=BillsToday(created=counts.daily("created")[today],
                                      completed=counts.daily("completed")[today]))


async def trends(*, ctx: BillingContext, days: int) -> BillTrends:
    """Bills created and completed per local day over the last `days` (today included), zero-filled."""
    now, today = _today(ctx)
    first = today - timedelta(days=days - 1)
    async with ctx.db.read() as conn:
        counts = await TALLY.read(conn, ctx.settings.zone, days=(first, today))
    created, completed = counts.daily("created"), counts.daily("completed")
    return BillTrends(as_of=now, timezone=ctx.settings.timezone, days=[
        BillTrendDay(day=day, created=created[day], completed=completed[day])
        for day in (first + timedelta(days=i) for i in range(days))])
