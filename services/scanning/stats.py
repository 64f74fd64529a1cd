"""What the dashboard counts of scanning (api/stats.py): parents by status, children, scans today and in the last
hour, completions and bill marks per local day — read from the tally the database keeps (models.TALLY, see
shared.tally), never by counting bags or scans per request."""
from __future__ import annotations

from datetime import date, datetime, timedelta

from pydantic import BaseModel, Field

from services.scanning.models import TALLY
from services.scanning.writes import ScanningContext
from shared.tally import Counts
from shared.timeutil import UtcDateTime, utcnow

LAST_HOUR = timedelta(hours=1)
# An area is listed when it holds a bag or has ever been scanned.
PRESENCE = ("parents_pending", "parents_in_progress", "parents_completed", "children", "scans")


class ParentCounts(BaseModel):
    pending: int
    in_progress: int
    completed: int
    total: int


class BilledToday(BaseModel):
    parents: int = Field(description="parents whose bill mark was set today (local day)")
    weight_kg: int = Field(description="their children, 1 kg each")


class Figures(BaseModel):
    parents: ParentCounts
    children: int = Field(description="child bags that exist")
    linked_children: int = Field(description="children on a parent")
    scans_today: int = Field(description="scan rows (every kind) of today, the warehouse's local day")
    scans_last_hour: int = Field(description="scan rows since the start of the minute an hour ago")
    completed_today: int = Field(description="parents that became completed today and still are")
    billed_today: BilledToday


class _Named(BaseModel):
    dispatch_area: str


class AreaStats(Figures, _Named):  # dispatch_area first
    pass


class ScanningStats(BaseModel):
    as_of: UtcDateTime = Field(description="when these counts were read (exact as of then)")
    day: date = Field(description="today, in `timezone`")
    timezone: str
    areas: list[AreaStats] = Field(description="every area holding a bag or ever scanned, by name (or the one asked)")
    totals: Figures


class TrendDay(BaseModel):
    day: date
    scans: int
    completed_parents: int
    billed_parents: int
    billed_weight_kg: int


class ScanningTrends(BaseModel):
    as_of: UtcDateTime
    timezone: str
    days: list[TrendDay] = Field(description="one per day, oldest first, ending today")


def _figures(counts: Counts, today: date, area: str | None) -> Figures:
    statuses = {s: counts.total(f"parents_{s}", area) for s in ("pending", "in_progress", "completed")}
    return Figures(
        parents=ParentCounts(**statuses, total=sum(statuses.values())),
        children=counts.total("children", area), linked_children=counts.total("linked_children", area),
        scans_today=counts.daily("scans", area)[today], scans_last_hour=counts.recently("scans", area),
        completed_today=counts.daily("completed_parents", area)[today],
        billed_today=BilledToday(parents=counts.daily("billed_parents", area)[today],
                                 weight_kg=counts.daily("billed_weight_kg", area)[today]))


def _today(ctx: ScanningContext) -> tuple[datetime, date]:
    now = utcnow()
    return now, now.astimezone(ctx.settings.zone).date()


async def stats(*, ctx: ScanningContext, area: str | None) -> ScanningStats:
    """Today's figures per area (only `area`'s when given, zeros if it has nothing) and their totals."""
    area = area.lower() if area else None
    now, today = _today(ctx)
    async with ctx.db.read() as conn:
        counts = await TALLY.read(conn, ctx.settings.zone, days=(today, today), since=now - LAST_HOUR, area=area)
    names = [area] if area else counts.areas(PRESENCE)
    return ScanningStats(
        as_of=now, day=today, timezone=ctx.settings.timezone,
        areas=[AreaStats(dispatch_area=name, **_figures(counts, today, name).model_dump()) for name in names],
        totals=_figures(counts, today, area))


async def trends(*, ctx: ScanningContext, days: int, area: str | None) -> ScanningTrends:
    """The last `days` local days (today included), zero-filled."""
    area = area.lower() if area else None
    now, today = _today(ctx)
    first = today - timedelta(days=days - 1)
    async with ctx.db.read() as conn:
        counts = await TALLY.read(conn, ctx.settings.zone, days=(first, today), area=area)
    series = {metric: counts.daily(metric, area)
              for metric in ("scans", "completed_parents", "billed_parents", "billed_weight_kg")}
    return ScanningTrends(as_of=now, timezone=ctx.settings.timezone, days=[
        TrendDay(day=day, **{metric: values[day] for metric, values in series.items()})
        for day in (first + timedelta(days=i) for i in range(days))])
