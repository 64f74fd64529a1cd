"""What the dashboard reads of scanning besides its counts: the recent scans (its activity feed) and one bag
composed for its lookup. Service-to-service reads (api/feed.py): no caller, only an optional area filter, which
hides another area's bag exactly as the area rule hides it from a dispatcher (`no_bag`)."""
from __future__ import annotations

from services.scanning import repository as repo
from services.scanning.qr import any_code
from services.scanning.schemas import LAST_SCANS, BagLookup, FeedScan, ScanFeed
from services.scanning.views import bag_out, no_bag
from services.scanning.writes import ScanningContext


def feed_area(area: str | None) -> str | None:
    """Areas are stored lower-case (as lists.scoped_area compares them)."""
    return area.lower() if area else None


async def recent_scans(*, ctx: ScanningContext, after_id: int | None, area: str | None, limit: int) -> ScanFeed:
    """The newest `limit` scans (of one area), only those after `after_id` if given, and the highest id there is.

    Ids are handed out before commit, so a scan may become visible after a higher id already was: a follower
    that only ever asks past the last id it saw can miss it. Asking without after_id (the newest page) and
    merging by id does not."""
    area = feed_area(area)
    async with ctx.db.read() as conn:
        rows = await repo.scan_feed(conn, newer_than=after_id, area=area, limit=limit)
        # The newest row is the highest id; only an empty page needs the index's end read separately.
        latest = rows[0]["id"] if rows else await repo.latest_scan_id(conn, area=area)
    return ScanFeed(items=[FeedScan.model_validate(dict(row)) for row in rows], latest_id=latest)


async def lookup_bag(*, ctx: ScanningContext, raw_qr: str, area: str | None) -> BagLookup:
    """The bag as GET /bags/{qr} shows it, a child's parent, and the bag's last scans: two indexed queries on one
    connection, from the primary (what was just scanned shows). A bag of another area than `area` is `no_bag`."""
    qr, area = any_code(ctx.settings, raw_qr), feed_area(area)
    async with ctx.db.read() as conn:
        bag, parent_row, children = await repo.bag_parent_children(conn, qr)
        if bag is None or (area is not None and bag["dispatch_area"] != area):
            raise no_bag(qr)
        scans = await repo.last_scans(conn, qr, area=area, limit=LAST_SCANS)
    is_parent = bag["type"] == "parent"
    return BagLookup(bag=bag_out(bag, bag["parent_qr"], children if is_parent else None),
                     parent=None if parent_row is None else bag_out(parent_row),
                     last_scans=[FeedScan.model_validate(dict(row)) for row in scans])
