"""What billing asks of scanning, and the outbox that makes it reliable (SPEC §2: no parent is ever both
deleted and billed).

Adding a parent to a bill claims its slot and inserts its row first ('pending'), then asks scanning to MARK the
parent as billed, then activates the row. Scanning refuses to delete a marked parent, under the same row lock
its delete takes, so a delete racing an add has one winner: the delete (the mark answers 404 and billing drops
its row) or the add (the delete answers 409). The mark carries the row's id (the link): every clear names the
link it undoes, so a clear that arrives late can never remove a later add's mark of the same parent.

Scanning's contract (its internal routes, reached only on the internal network):
  PUT    /internal/parents/{qr}/bill {"bill_id", "link"} -> 200 {qr_id, capacity, child_count, bill_id, link, ...};
         404 no such parent; 422 not a parent QR; 409 `parent-billed` {"bill_id", "link"} marked by another bill
  DELETE /internal/parents/{qr}/bill?bill_id=&link=       -> 204 once that mark is gone (or was never there)
  POST   /internal/parents/counts {"qr_ids": [...]}       -> 200 {"parents": {qr: {child_count, capacity, ...}}, "missing"}
  GET    /internal/parents/marks?billed_after=&billed_before=&after_qr=&limit= -> {"items", "next_cursor"}
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import delete, func, select, update

from services.billing import repository as repo
from services.billing.models import MarkOutbox
from shared.db import Database
from shared.errors import DependencyUnavailable, InvalidInput, NotFound, ProblemError
from shared.http import ResilientClient
from shared.timeutil import utcnow
from shared.unit_of_work import UnitOfWork, run_write

log = logging.getLogger("bagtrack.billing.marks")

outbox = MarkOutbox.__table__


class ScanningUnavailable(DependencyUnavailable):
    slug = "scanning-unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, dependency="scanning", retry_after=2)


class ParentBilledElsewhere(Exception):
    """Scanning holds a mark of this parent by another bill (that bill's link)."""

    def __init__(self, bill_id: str, link: int) -> None:
        super().__init__(bill_id)
        self.bill_id, self.link = bill_id, link


@dataclass(frozen=True)
class Marked:
    qr_id: str
    capacity: int
    child_count: int


class Scanning:
    """Billing's calls to scanning, each within its own budget (services/billing/config.py)."""

    def __init__(self, client: ResilientClient, *, mark_timeout: float, counts_timeout: float) -> None:
        self.client = client
        self.mark_timeout = mark_timeout
        self.counts_timeout = counts_timeout

    async def mark(self, qr: str, bill_id: str, link: int) -> Marked:
        """Mark `qr` as billed by `bill_id` (this link). NotFound / InvalidInput pass scanning's own words on;
        ParentBilledElsewhere when another bill's mark stands; ScanningUnavailable when scanning cannot say."""
        try:
            response = await self.client.request("PUT", f"/internal/parents/{quote(qr, safe='')}/bill",
                                                 json={"bill_id": bill_id, "link": link}, retry=True,
                                                 timeout=self.mark_timeout)
        except ProblemError as exc:
            raise ScanningUnavailable(f"scanning cannot confirm parent {qr} ({exc.detail}); nothing was added, "
                                      "retry") from exc
        body = _json(response)
        if response.status == 200:
            return Marked(body["qr_id"], int(body["capacity"]), int(body["child_count"]))
        if response.status == 404:
            raise NotFound(f"parent {qr} has not been scanned (or was deleted); scan it first", slug="no-bag")
        if response.status == 422:
            raise InvalidInput(body.get("detail") or f"{qr} is not a parent QR", slug="not-a-parent")
        if response.status == 409 and body.get("bill_id") and body.get("link") is not None:
            raise ParentBilledElsewhere(str(body["bill_id"]), int(body["link"]))
        raise ScanningUnavailable(f"scanning answered {response.status} when marking {qr}; nothing was added")

    async def clear(self, qr: str, bill_id: str, link: int) -> None:
        """Clear that mark (a no-op if it is gone, or is another link's); raises when scanning did not confirm."""
        response = await self.client.request(
            "DELETE", f"/internal/parents/{quote(qr, safe='')}/bill", params={"bill_id": bill_id, "link": str(link)},
            retry=True, timeout=self.mark_timeout)
        if response.status != 204:
            raise RuntimeError(f"scanning answered {response.status}")

    async def counts(self, qrs: list[str]) -> dict[str, dict[str, Any]]:
        """Each parent's current children and mark, in one call; raises when scanning cannot answer in time."""
        response = await self.client.request("POST", "/internal/parents/counts", json={"qr_ids": qrs},
                                             timeout=self.counts_timeout)
        if response.status != 200:
            raise RuntimeError(f"scanning answered {response.status}")
        return response.json()["parents"]

    async def marks(self, *, billed_after: datetime, billed_before: datetime, after_qr: str | None,
                    limit: int = 500) -> dict[str, Any]:
        params = {"billed_after": billed_after.isoformat(), "billed_before": billed_before.isoformat(),
                  "limit": str(limit)}
        if after_qr:
            params["after_qr"] = after_qr
        response = await self.client.request("GET", "/internal/parents/marks", params=params)
        if response.status != 200:
            raise RuntimeError(f"scanning answered {response.status}")
        return response.json()


def _json(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# --- the outbox ---------------------------------------------------------------------------------------------

def enqueue_clear(work: UnitOfWork, qr: str, bill_id: str, link: int):
    """Within a write: remember that scanning must clear this mark (sent after the commit, retried until done)."""
    return work.execute(outbox.insert().values(parent_qr=qr, bill_id=bill_id, link=link, attempts=0,
                                               next_attempt_at=utcnow(), created_at=utcnow()))


async def deliver_outbox(db: Database, cache, scanning: Scanning, *, max_backoff: float, batch: int = 100) -> int:
    """Send every due clear once; a success removes its entry, a failure pushes it back 2^attempts seconds.

    Entries are leased before they are sent (next_attempt_at moves 30 s on), so two billing replicas working the
    outbox at once do not send the same clear twice in a row (twice would be harmless: clears are idempotent)."""
    now = utcnow()
    due = select(outbox.c.id).where(outbox.c.next_attempt_at <= now).order_by(outbox.c.id).limit(batch)

    async def lease(work: UnitOfWork):
        rows = await work.rows(select(outbox).where(outbox.c.id.in_(due)))
        if rows:
            await work.execute(update(outbox).where(outbox.c.id.in_([r["id"] for r in rows]),
                                                    outbox.c.next_attempt_at <= now)
                               .values(next_attempt_at=now + timedelta(seconds=30)))
        return [dict(r) for r in rows]

    entries = (await run_write(db, cache, lease)).result
    sent = 0
    for entry in entries:
        try:
            await scanning.clear(entry["parent_qr"], entry["bill_id"], entry["link"])
        except Exception as exc:
            attempts = entry["attempts"] + 1
            wait = min(max_backoff, 2.0 ** attempts)
            await run_write(db, cache, lambda work, e=entry, a=attempts, w=wait, x=exc: work.execute(
                update(outbox).where(outbox.c.id == e["id"]).values(
                    attempts=a, next_attempt_at=utcnow() + timedelta(seconds=w),
                    last_error=f"{type(x).__name__}: {x}"[:200])))
            continue
        await run_write(db, cache, lambda work, e=entry: work.execute(delete(outbox).where(outbox.c.id == e["id"])))
        sent += 1
    return sent


async def outbox_backlog(db: Database) -> tuple[int, datetime | None]:
    """How many clears wait, and since when (shown by /ready)."""
    async with db.read() as conn:
        row = await conn.row(select(func.count().label("n"), func.min(outbox.c.created_at).label("oldest")))
    return int(row["n"]), row["oldest"]


# --- the reconciler -----------------------------------------------------------------------------------------

async def settle_pending(db: Database, cache, scanning: Scanning, *, grace: float) -> int:
    """Parents left 'pending' past `grace` (an add that died between claiming the slot and finishing): ask
    scanning whether the mark landed. It did (with this link): the add is finished. It did not: the slot is
    released and the row dropped. Scanning unreachable: tried again next time."""
    async with db.read() as conn:
        stuck = await repo.stuck_pending(conn, utcnow() - timedelta(seconds=grace))
    if not stuck:
        return 0
    current = await scanning.counts([row["parent_qr"] for row in stuck])
    settled = 0
    for row in stuck:
        seen = current.get(row["parent_qr"])
        landed = seen is not None and seen.get("bill_id") == row["bill_id"] and seen.get("link") == row["id"]
        if landed:
            bill = {"id": row["bill_pk"], "bill_id": row["bill_id"], "bill_key": row["bill_id"]}
            done = await run_write(db, cache, lambda work, r=row, s=seen, b=bill: repo.activate(
                work, r["id"], b, r["parent_qr"], int(s["capacity"]), int(s["child_count"]), None),
                one_statement=db.dialect == "postgresql")
        else:
            done = await run_write(db, cache, lambda work, r=row: repo.release_pending(work, r["id"], r["bill_pk"]))
        if done.result:
            settled += 1
            log.warning("pending parent %s on bill %s %s by the reconciler", row["parent_qr"], row["bill_id"],
                        "activated" if landed else "released")
    return settled


async def clear_strays(db: Database, cache, scanning: Scanning, *, window: float, grace: float,
                       since: datetime | None = None) -> tuple[int, datetime]:
    """Marks set longer than `grace` ago whose link no bill holds: an add whose answer was lost after scanning
    marked (a timeout), or whose row the reconciler released. Cleared through the outbox, by their link, so a
    later add of the same parent keeps its own mark.

    Only marks not looked at yet are asked for: those set since `since` (the previous pass's watermark, less
    `grace` again for clocks that differ between hosts), or within the last `window` seconds on a replica's first
    pass. How many were queued, and the watermark for the next pass."""
    now = utcnow()
    before = now - timedelta(seconds=grace)
    after = now - timedelta(seconds=window) if since is None else since - timedelta(seconds=grace)
    cursor, queued = None, 0
    while True:
        page = await scanning.marks(billed_after=after, billed_before=before, after_qr=cursor)
        links = [int(item["link"]) for item in page["items"]]
        if links:
            async with db.read() as conn:
                known = await repo.held_links(conn, links) | await queued_links(conn, links)
            strays = [item for item in page["items"] if int(item["link"]) not in known]
            if strays:
                async def queue(work: UnitOfWork, strays=strays) -> None:
                    for item in strays:
                        await enqueue_clear(work, item["qr_id"], item["bill_id"], int(item["link"]))
                await run_write(db, cache, queue)
                queued += len(strays)
                log.warning("clearing %d stray marks: %s", len(strays), ", ".join(i["qr_id"] for i in strays[:10]))
        cursor = page.get("next_cursor")
        if not cursor:
            return queued, before


async def queued_links(conn, links: list[int]) -> set[int]:
    return {row["link"] for row in await conn.rows(select(outbox.c.link).where(outbox.c.link.in_(links)))}
