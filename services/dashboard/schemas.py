"""Response shapes of the dashboard (documentation: the answers are composed as JSON in service.py). Each part's
`data` is its source's answer as that source's internal route gives it (docs/dashboard.md lists them)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["fresh", "stale", "unavailable"]
SourceName = Literal["scanning", "billing"]


class Freshness(BaseModel):
    status: Status = Field(description="fresh; stale (the last refresh failed, the source is known down, or the "
                                       "value came back from the database and is not refreshed yet); unavailable "
                                       "(never fetched, or not within the answer's budget)")
    as_of: str | None = Field(description="when the source computed it (ISO-8601 UTC); null when unavailable")
    age_seconds: float | None = Field(description="now - as_of")
    source: SourceName


class PartOut(Freshness):
    data: Any = Field(description="the source's answer; null when unavailable")


class Sources(BaseModel):
    sources: dict[SourceName, Literal["up", "down"]] = Field(description="each source this answer needed")
    down: list[SourceName] = Field(description="the sources known down (their parts are stale or unavailable)")


class StatsOut(Sources):
    scanning: PartOut = Field(description="scanning's GET /internal/stats (the caller's area for a dispatcher)")
    billing: PartOut | None = Field(None, description="billing's GET /internal/bills/stats: billers and admins only")
    as_of: str | None = Field(description="the oldest part's as_of")


class ActivityOut(Sources):
    scans: PartOut = Field(description="scanning's GET /internal/scans: {items (newest first), latest_id}")
    bill_events: PartOut | None = Field(None, description="billing's GET /internal/bills/events: billers and admins")
    as_of: str | None


class TrendsOut(Sources):
    days: int
    scanning: PartOut = Field(description="scanning's GET /internal/trends: {days: [{day, scans, ...}]}")
    billing: PartOut | None = Field(None, description="billing's GET /internal/bills/trends: billers and admins")
    as_of: str | None


class LookupOut(Freshness, Sources):
    """A QR (`kind` bag: bag, parent, last_scans, and the bill holding it or its parent) or a bill code (`kind`
    bill: the bill with its parents). The freshness fields are those of the bag (or bill) itself."""

    kind: Literal["bag", "bill"]
    code: str = Field(description="the code as normalised")
    bag: dict[str, Any] | None = Field(None, description="as GET /bags/{qr_id} shows it (a parent with children)")
    parent: dict[str, Any] | None = Field(None, description="a linked child's parent")
    last_scans: list[dict[str, Any]] | None = Field(None, description="the bag's last scans, newest first")
    bill: Any = Field(None, description="kind bag: a part whose data is {bill: {bill_id, status, ...} | null} "
                                        "(billers and admins only); kind bill: the bill as GET /bills/{bill_id}")
