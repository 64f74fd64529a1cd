"""UTC everywhere: SQLite returns naive datetimes, so values read back are tagged UTC before leaving us."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


UtcDateTime = Annotated[datetime, AfterValidator(as_utc)]
