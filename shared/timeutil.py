"""UTC everywhere: SQLite returns naive datetimes, so values read back are tagged UTC before leaving us."""
from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import AfterValidator


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


UtcDateTime = Annotated[datetime, AfterValidator(as_utc)]


def local_day(zone: ZoneInfo, day: date | None = None) -> tuple[date, datetime, datetime]:
    """A local day of `zone` (default: today there) and its bounds in UTC, [start, end): what "today" and "a day"
    mean to the warehouse, whatever the servers' clocks say. A day with a DST change is 23 or 25 hours long."""
    day = day or datetime.now(zone).date()
    start = datetime.combine(day, time.min, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)
    return day, start.astimezone(UTC), end.astimezone(UTC)
