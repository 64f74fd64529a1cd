"""Query parameters every list endpoint shares, validated before they reach SQL (so bad input is a 422, never
a database error): areas and usernames by pattern, datetimes normalised to UTC within a sane range."""
from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import AfterValidator, BeforeValidator

from shared.pagination import MAX_LIMIT

EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)


_NUMBER = re.compile(r"^\s*[-+]?\d+(\.\d*)?\s*$")


def written_date(value: Any) -> Any:
    """Dates are written as dates: pydantic would read `0.5` or `2024` as seconds since 1970 (`2024` is then
    1970-01-01T00:33:44), which no client means."""
    if isinstance(value, str) and _NUMBER.match(value):
        raise ValueError("write a date as ISO 8601 (2026-11-28 or 2026-11-28T10:00:00+05:30), not a number")
    return value


def _utc_in_range(moment: datetime | None) -> datetime | None:
    """Naive means UTC; an offset is applied here, where Python checks it, not in the database."""
    if moment is None:
        return None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    try:
        moment = moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("date out of range") from exc
    if not EARLIEST <= moment <= LATEST:
        raise ValueError(f"date must be between {EARLIEST.year} and {LATEST.year}")
    return moment


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
Area = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Username = Annotated[str | None, Query(max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
Since = Annotated[datetime | None, Query(description="inclusive, ISO 8601 (UTC if no offset)"),
                  BeforeValidator(written_date), AfterValidator(_utc_in_range)]
Until = Annotated[datetime | None, Query(description="exclusive, ISO 8601 (UTC if no offset)"),
                  BeforeValidator(written_date), AfterValidator(_utc_in_range)]
