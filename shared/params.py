"""Query parameters every list endpoint shares, validated before they reach SQL (so bad input is a 422, never
a database error): areas and usernames by pattern, datetimes normalised to UTC within a sane range."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query
from pydantic import AfterValidator

from shared.pagination import MAX_LIMIT

EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)


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
                  AfterValidator(_utc_in_range)]
Until = Annotated[datetime | None, Query(description="exclusive, ISO 8601 (UTC if no offset)"),
                  AfterValidator(_utc_in_range)]
