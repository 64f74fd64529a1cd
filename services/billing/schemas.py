"""Request and response shapes of the billing service (the names are the public contract, SPEC §3)."""
from __future__ import annotations

from datetime import date as Date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.timeutil import UtcDateTime

BillStatus = Literal["new", "processing", "completed"]
EventKind = Literal["create", "add", "remove", "complete", "reopen", "edit", "delete"]
Capacity = Field(ge=1, le=500, description="parent bags the bill expects (1-500)")


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BillCreate(StrictBody):
    bill_id: str | None = Field(None, min_length=1, max_length=64,
                                description="your own code (must hold a '_'); generated as BILL_YYYYMMDD_NNNN if absent")
    capacity: int = Capacity
    description: str | None = Field(None, max_length=500)
    destination: str | None = Field(None, max_length=200)
    vehicle_number: str | None = Field(None, max_length=32)


class BillEdit(StrictBody):
    capacity: int | None = Field(None, ge=1, le=500)
    description: str | None = Field(None, max_length=500)
    destination: str | None = Field(None, max_length=200)
    vehicle_number: str | None = Field(None, max_length=32)

    @model_validator(mode="after")
    def _something(self) -> "BillEdit":
        if not self.model_fields_set:
            raise ValueError("name at least one of capacity, description, destination, vehicle_number")
        if "capacity" in self.model_fields_set and self.capacity is None:
            raise ValueError("capacity cannot be null")
        return self


class AddBag(StrictBody):
    parent_qr: str = Field(min_length=1, max_length=64)


class BillBag(BaseModel):
    parent_qr: str
    child_count: int
    capacity: int
    weight_kg: int
    added_by: str
    added_at: UtcDateTime
    pending: bool = Field(False, description="still being added (scanning has not confirmed it yet)")


class Counts(BaseModel):
    """How fresh the children counts (and so actual_weight_kg) are."""

    stale: bool = Field(description="true when scanning could not be asked just now: the counts are the last known")
    counted_at: UtcDateTime | None
    age_seconds: float | None


class BillOut(BaseModel):
    bill_id: str
    status: BillStatus
    capacity: int
    linked_count: int
    expected_weight_kg: int
    actual_weight_kg: int
    description: str | None
    destination: str | None
    vehicle_number: str | None
    bags: list[BillBag] | None = None
    counts: Counts
    created_by: str
    created_at: UtcDateTime
    updated_at: UtcDateTime
    completed_at: UtcDateTime | None


class BillEventOut(BaseModel):
    id: int
    bill_id: str
    kind: EventKind
    parent_qr: str | None
    detail: dict[str, Any] | None
    username: str
    created_at: UtcDateTime


class Totals(BaseModel):
    bills: int = 0
    bags: int = 0
    expected_weight_kg: int = 0
    actual_weight_kg: int = 0


class CreatorSummary(Totals):
    by_status: dict[BillStatus, Totals]


class DaySummary(BaseModel):
    date: Date
    timezone: str
    totals: Totals
    by_status: dict[BillStatus, Totals]
    by_creator: dict[str, CreatorSummary]


# --- internal read feeds (the dashboard's calls: services/billing/api/feed.py) ----------------------------------

MAX_EVENT_ID = 2**31 - 1  # bill_events.id is an INTEGER: anything above is no event, and never reaches SQL


class BillFeedEvent(BaseModel):
    """A line of some bill's history as the activity feed shows it: who (id and name), what, when."""

    id: int
    bill_id: str
    kind: EventKind
    parent_qr: str | None
    user_id: int | None = Field(description="null for the system (the reconciler)")
    username: str
    created_at: UtcDateTime


class BillEventsFeed(BaseModel):
    items: list[BillFeedEvent] = Field(description="newest first")
    latest_id: int = Field(description="the highest event id (0: none), even with no items")


class ParentBill(BaseModel):
    bill_id: str
    status: BillStatus
    capacity: int
    linked_count: int
    added_at: UtcDateTime
    pending: bool = Field(description="still being added (scanning has not confirmed it yet)")


class ParentBillOut(BaseModel):
    bill: ParentBill | None = Field(description="the bill holding the parent; null when none does")
