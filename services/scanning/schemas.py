"""Request and response shapes of the scanning service (the names are the public contract)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.timeutil import UtcDateTime

BagType = Literal["parent", "child"]
BagStatus = Literal["pending", "in_progress", "completed"]
ScanKind = Literal["parent", "child", "unlink"]
# Raw scanner input may carry control characters and padding; the normalised code is ≤ 32 characters.
RawQr = Field(min_length=1, max_length=64)
ScanId = Field(None, min_length=1, max_length=128, description="client-chosen id; a retry with it replays the first answer")
# A bill's code as billing writes it (kept as sent): it always holds shared.codes.BILL_CODE_MARK, which no bag QR may.
BILL_CODE = {"min_length": 1, "max_length": 40, "pattern": r"^[A-Za-z0-9.-]*_[A-Za-z0-9_.-]*$"}
MAX_COUNTED = 500
MAX_MARKS_PAGE = 1000


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParentScanIn(StrictBody):
    qr_id: str = RawQr
    scan_id: str | None = ScanId
    dispatch_area: str | None = Field(None, max_length=64, description="admins only: the area of a new parent")


class ChildScanIn(StrictBody):
    parent_qr: str = RawQr
    child_qr: str = RawQr
    scan_id: str | None = ScanId


class BagOut(BaseModel):
    qr_id: str
    type: BagType
    status: BagStatus
    dispatch_area: str
    child_count: int
    capacity: int | None
    weight_kg: int
    parent_qr: str | None
    children: list[str] | None = None
    created_by: str
    created_at: UtcDateTime


class ScanResult(BaseModel):
    parent: BagOut
    child: BagOut | None = None
    repeat: bool
    created: bool = Field(False, description="the scan created a new bag")


class ScanOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: ScanKind
    parent_qr: str
    child_qr: str | None
    dispatch_area: str
    username: str
    repeat: bool
    created_at: UtcDateTime


# --- internal routes (billing's calls: services/scanning/api/internal.py) ---------------------------------------

Link = Field(ge=1, le=2**62, description="billing's row holding the parent: the one mark a clear undoes")


class BillMarkIn(StrictBody):
    bill_id: str = Field(**BILL_CODE)
    link: int = Link


class BillMarkOut(BaseModel):
    qr_id: str
    capacity: int
    child_count: int
    bill_id: str
    link: int
    dispatch_area: str
    billed_at: UtcDateTime


class ParentCountsIn(StrictBody):
    qr_ids: list[Annotated[str, RawQr]] = Field(min_length=1, max_length=MAX_COUNTED)


class ParentCount(BaseModel):
    child_count: int
    capacity: int
    bill_id: str | None
    link: int | None


class ParentCountsOut(BaseModel):
    parents: dict[str, ParentCount]
    missing: list[str] = Field(description="asked for, but no such parent (never scanned, deleted, or a child)")


class BillMark(BaseModel):
    qr_id: str
    bill_id: str
    link: int
    billed_at: UtcDateTime


class BillMarksPage(BaseModel):
    items: list[BillMark]
    next_cursor: str | None = Field(description="after_qr of the next page; null on the last")


# --- internal read feeds (the dashboard's calls: services/scanning/api/feed.py) ---------------------------------

MAX_SCAN_ID = 2**62  # scan ids are BIGINT on PostgreSQL: anything above is no scan, and never reaches SQL
LAST_SCANS = 10  # scans a lookup shows of one bag


class FeedScan(ScanOut):
    """A scan as the activity feed shows it: who (id and name), what, where, when."""

    user_id: int


class ScanFeed(BaseModel):
    items: list[FeedScan] = Field(description="newest first")
    latest_id: int = Field(description="the highest scan id for this area filter (0: none), even with no items")


class BagLookup(BaseModel):
    bag: BagOut = Field(description="exactly as GET /bags/{qr_id} shows it (a parent with its children)")
    parent: BagOut | None = Field(description="a linked child's parent, without its children")
    last_scans: list[FeedScan] = Field(description=f"the last {LAST_SCANS} scans of this QR (as parent or child), "
                                                   "newest first")


class ParentFormat(BaseModel):
    pattern: str = Field(description="regular expression over the normalised (upper-cased) QR")
    capacity: int = Field(description="children when full")
    full_weight_kg: int


class ScanReference(BaseModel):
    """The QR formats and scanning rules clients validate against (GET /scans/reference, any signed-in user)."""

    parent_formats: list[ParentFormat]
    child_pattern: str
    child_weight_kg: int
    idempotency_window_seconds: int = Field(description="a scan_id replays its first answer for this long")
    unlink_window_seconds: int = Field(description="a dispatcher may undo their own link for this long")
