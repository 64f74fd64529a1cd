"""What the dashboard reads of billing besides its counts: every bill's history as an activity feed, and which
bill holds a parent (for its lookup of a QR). Service-to-service reads (api/feed.py); a bill itself is read by
service.read_bill, the public read."""
from __future__ import annotations

from services.billing import repository as repo
from services.billing.schemas import BillEventsFeed, BillFeedEvent, ParentBill, ParentBillOut
from services.billing.service import BillingContext, _parent_code


async def recent_events(*, ctx: BillingContext, after_id: int | None, limit: int) -> BillEventsFeed:
    """The newest `limit` history lines of all bills, only those after `after_id` if given, and the highest id.

    Ids are handed out before commit, so an event may become visible after a higher id already was: a follower
    that only ever asks past the last id it saw can miss it. Asking without after_id and merging by id does not."""
    async with ctx.db.read() as conn:
        rows = await repo.events_feed(conn, newer_than=after_id, limit=limit)
        latest = rows[0]["id"] if rows else await repo.latest_event_id(conn)
    return BillEventsFeed(items=[BillFeedEvent.model_validate(dict(row)) for row in rows], latest_id=latest)


async def parent_bill(*, ctx: BillingContext, raw_qr: str) -> ParentBillOut:
    """The bill holding (or being loaded with) this parent, or none: one probe of the unique parent_qr."""
    async with ctx.db.read() as conn:
        row = await repo.parent_bill(conn, _parent_code(raw_qr))
    if row is None:
        return ParentBillOut(bill=None)
    return ParentBillOut(bill=ParentBill(bill_id=row["bill_id"], status=row["status"], capacity=row["capacity"],
                                         linked_count=row["linked_count"], added_at=row["added_at"],
                                         pending=row["state"] == "pending"))
