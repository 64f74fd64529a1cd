"""Bill marks: scanning's side of "no parent is ever both deleted and billed".

Billing marks a parent (`bags.bill_id`) before it commits a bill row holding it, and clears the mark (through
its outbox) after the parent left the bill. The mark and the delete (writes.delete_bag) are each one conditional
statement on the parent's row, so whichever takes the row lock first wins and the other sees what it did: a
mark after a delete finds no parent (404), a delete after a mark finds it billed (409). These are billing's calls
(api/internal.py): no user, no area rule.
"""
from __future__ import annotations

from datetime import datetime

from services.scanning import repository as repo
from services.scanning.qr import InvalidQr, filter_code, parent_code
from services.scanning.schemas import BillMark, BillMarkOut, BillMarksPage, ParentCount, ParentCountsOut
from services.scanning.views import no_bag
from services.scanning.writes import ParentBilled, ScanningContext
from shared.codes import normalize_code
from shared.timeutil import utcnow
from shared.unit_of_work import LostRace, UnitOfWork, run_write


async def mark_billed(*, ctx: ScanningContext, raw_qr: str, bill_id: str, link: int) -> BillMarkOut:
    """Mark the parent as on `bill_id` by `link` (the same bill again: the new link). Another bill's parent: 409
    naming that bill and its link (billing clears a stale one itself: it knows no other bill holds the parent)."""
    qr, _ = parent_code(ctx.settings, raw_qr)

    async def mark(work: UnitOfWork) -> BillMarkOut:
        marked = await repo.mark_billed(work, qr, bill_id, link, utcnow())
        if marked is not None:
            return BillMarkOut.model_validate(dict(marked))
        bag = await repo.get_bag(work.conn, qr)
        if bag is None:
            raise no_bag(qr)
        if bag["type"] != "parent":  # a QR of a parent format held by a child: formats changed since it was made
            raise InvalidQr(f"{qr} is a child bag, not a parent", qr_id=qr)
        if bag["bill_id"] is not None:
            raise ParentBilled(qr, bag["bill_id"], link=bag["bill_link"])
        raise LostRace  # the other bill's mark was cleared meanwhile: once more

    return (await run_write(ctx.db, ctx.cache, mark)).result


async def clear_mark(*, ctx: ScanningContext, raw_qr: str, bill_id: str, link: int) -> None:
    """Clear that mark (bill and link), if the parent still carries it; done either way (a retry from the outbox
    is safe, and a late one leaves a later add's mark alone)."""
    qr, _ = parent_code(ctx.settings, raw_qr)

    async def clear(work: UnitOfWork) -> None:
        await repo.clear_mark(work, qr, bill_id, link)

    await run_write(ctx.db, ctx.cache, clear)


async def parent_counts(*, ctx: ScanningContext, raw_qrs: list[str]) -> ParentCountsOut:
    """Children, capacity and mark of each parent asked for (what a bill's weight is made of), from the primary:
    a bill is read as it is now."""
    qrs = list(dict.fromkeys(normalize_code(raw) for raw in raw_qrs))
    async with ctx.db.read() as conn:
        rows = await repo.parent_counts(conn, qrs)
    parents = {row["qr_id"]: ParentCount(child_count=row["child_count"], capacity=row["capacity"],
                                         bill_id=row["bill_id"], link=row["link"]) for row in rows}
    return ParentCountsOut(parents=parents, missing=[qr for qr in qrs if qr not in parents])


async def list_marks(*, ctx: ScanningContext, limit: int, after_qr: str | None, billed_after: datetime | None,
                     billed_before: datetime | None) -> BillMarksPage:
    """A page of marks in QR order, for billing's reconciler to compare with its bills."""
    async with ctx.db.read() as conn:
        rows = await repo.list_marks(conn, limit=limit + 1, after_qr=filter_code(after_qr),
                                     billed_after=billed_after, billed_before=billed_before)
    items = [BillMark.model_validate(dict(row)) for row in rows[:limit]]
    return BillMarksPage(items=items, next_cursor=items[-1].qr_id if len(rows) > limit else None)
