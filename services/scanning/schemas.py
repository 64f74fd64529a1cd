"""Request and response shapes of the scanning service (the names are the public contract)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.timeutil import UtcDateTime

BagType = Literal["parent", "child"]
BagStatus = Literal["pending", "in_progress", "completed"]
ScanKind = Literal["parent", "child", "unlink"]
# Raw scanner input may carry control characters and padding; the normalised code is ≤ 32 characters.
RawQr = Field(min_length=1, max_length=64)
ScanId = Field(None, min_length=1, max_length=128, description="client-chosen id; a retry with it replays the first answer")


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
