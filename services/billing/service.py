"""Billing's rules (SPEC §2 "Bills"): bills, loading and removing parents, completion, history, the day's summary.

Every write goes through the one unit of work (shared.unit_of_work). Loading a parent asks scanning to mark it
(services/billing/marks.py) between two short transactions, never inside one: no database connection waits on
another service.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, AsyncIterator

from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError

from services.billing import marks
from services.billing import repository as repo
from services.billing.codes import bill_code, generated_code
from services.billing.config import Settings
from services.billing.marks import ParentBilledElsewhere, Scanning, ScanningUnavailable, enqueue_clear
from services.billing.schemas import (BillBag, BillCreate, BillEdit, BillEventOut, BillOut, Counts, CreatorSummary,
                                      DaySummary, Totals)
from shared.cache import Cache
from shared.codes import is_bill_code, normalize_code
from shared.csvstream import csv_chunks
from shared.db import Conn, Database, Row
from shared.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from shared.pagination import Page, cursor_position, page_of
from shared.security import Principal
from shared.timeutil import as_utc, local_day, utcnow
from shared.unit_of_work import (Idempotency, LostRace, UnitOfWork, Written,
                                 purge_idempotency_keys, recorded, run_write)

log = logging.getLogger("bagtrack.billing")

COUNTS_REWRITE_AFTER = 10.0  # seconds: a read stores unchanged fresh counts at most this often per bill


class BillFull(Conflict):
    slug = "bill-full"


class BillCompleted(Conflict):
    slug = "bill-completed"


class ParentOnBill(Conflict):
    slug = "parent-on-bill"


@dataclass
class BillingContext:
    """What the rules need beyond the request; built once at start-up."""

    settings: Settings
    db: Database
    cache: Cache
    scanning: Scanning
    strays_checked_until: datetime | None = None  # the reconciler's watermark (marks.clear_strays)
    _delivery: asyncio.Task | None = field(default=None, repr=False)

    def kick_outbox(self) -> None:
        """Send the clears just queued now, in the background (the answer never waits on scanning); the outbox
        job retries whatever this does not deliver."""
        if self._delivery is None or self._delivery.done():
            self._delivery = asyncio.create_task(self.deliver_outbox())

    async def deliver_outbox(self) -> None:
        try:
            await marks.deliver_outbox(self.db, self.cache, self.scanning, max_backoff=self.settings.outbox_max_backoff)
        except Exception as exc:  # the job tries again; nothing is lost
            log.warning("outbox delivery failed: %s", exc)


async def build_context(app: FastAPI) -> None:
    """Start-up hook: the billing context on app.state."""
    state = app.state
    settings: Settings = state.settings
    scanning = Scanning(state.clients["scanning"], mark_timeout=settings.mark_timeout,
                        counts_timeout=settings.counts_timeout)
    state.billing = BillingContext(settings, state.db, state.cache, scanning)


# --- views ----------------------------------------------------------------------------------------------------

def bill_out(bill: Row, bags: list[Row] | None = None, *, fresh: bool = False) -> dict[str, Any]:
    """A bill as the API shows it (JSON-ready: idempotent writes store it as their answer)."""
    counted_at = utcnow() if fresh else as_utc(bill["counted_at"])
    age = None if counted_at is None else max(0.0, round((utcnow() - counted_at).total_seconds(), 1))
    shown = None if bags is None else [
        BillBag(parent_qr=b["parent_qr"], child_count=b["child_count"], capacity=b["capacity"],
                weight_kg=b["child_count"], added_by=b["added_by"], added_at=b["added_at"],
                pending=b["state"] == "pending") for b in bags]
    return BillOut(
        bill_id=bill["bill_id"], status=bill["status"], capacity=bill["capacity"], linked_count=bill["linked_count"],
        expected_weight_kg=bill["expected_weight_kg"], actual_weight_kg=bill["actual_weight_kg"],
        description=bill["description"], destination=bill["destination"], vehicle_number=bill["vehicle_number"],
        bags=shown, counts=Counts(stale=not fresh and bool(bill["linked_count"]), counted_at=counted_at,
                                  age_seconds=age if not fresh else 0.0),
        created_by=bill["created_by"], created_at=bill["created_at"], updated_at=bill["updated_at"],
        completed_at=bill["completed_at"]).model_dump(mode="json")


def no_bill(code: str) -> NotFound:
    return NotFound(f"bill {code} does not exist", slug="no-bill", bill_id=code)


async def _bill(conn: Conn | UnitOfWork, code: str) -> Row:
    bill = await repo.get_bill(conn, code)
    if bill is None:
        raise no_bill(code)
    return bill


async def _full_view(conn: Conn | UnitOfWork, code: str) -> dict[str, Any]:
    bill = await _bill(conn, code)
    return bill_out(bill, await repo.bill_parents(conn.conn if isinstance(conn, UnitOfWork) else conn, bill["id"]))


def _parent_code(raw: str) -> str:
    qr = normalize_code(raw)
    if is_bill_code(qr):
        raise InvalidInput(f"{qr} is a bill code, not a parent QR", slug="not-a-parent")
    if not qr or len(qr) > 32:
        raise InvalidInput(f"{raw!r} is not a parent QR", slug="not-a-parent")
    return qr


# --- bills ----------------------------------------------------------------------------------------------------

async def create_bill(*, ctx: BillingContext, principal: Principal, body: BillCreate,
                      key: str | None) -> Written[dict]:
    """A new bill, with the client's code or the next BILL_YYYYMMDD_NNNN of the warehouse's day."""
    given = bill_code(body.bill_id) if body.bill_id is not None else None
    fields = body.model_dump(exclude={"bill_id"})

    async def create(work: UnitOfWork) -> dict:
        code = given
        if code is None:  # the day's next number, past any a client took for its own code
            day = local_day(ctx.settings.zone)[0]
            while code is None or await repo.get_bill(work, code) is not None:
                code = generated_code(day, await repo.next_day_number(work, f"{day:%Y%m%d}"))
        await repo.insert_bill(work, bill_id=code, bill_key=code, created_by=principal.username,
                                         created_by_id=principal.user_id, **fields)
        bill = await repo.get_bill(work, code)
        await repo.record(work, bill, "create", principal, detail=fields)
        return bill_out(bill, [])

    request = Idempotency.of(principal.user_id, key, "bill-create", body.model_dump())
    for _ in range(3):
        try:
            return await run_write(ctx.db, ctx.cache, create, idempotency=request)
        except IntegrityError as exc:
            if given is not None:
                raise Conflict(f"bill {given} already exists", slug="bill-exists", bill_id=given) from exc
            # A client created the generated code between our check and our insert: take the next one.
    raise ServiceUnavailable("could not generate a free bill code; retry", retry_after=1)


async def read_bill(*, ctx: BillingContext, raw: str) -> dict:
    """A bill with its parents, their children counted by scanning now (one batch call within
    BILLING_COUNTS_TIMEOUT), or the last known counts, marked stale with their age, when scanning cannot say."""
    code = bill_code(raw)
    async with ctx.db.read() as conn:
        bill = await _bill(conn, code)
        bags = await repo.bill_parents(conn, bill["id"])
    active = [b for b in bags if b["state"] == "active"]
    if not active:
        return bill_out(bill, bags, fresh=True)
    try:
        current = await ctx.scanning.counts([b["parent_qr"] for b in active])
    except Exception as exc:  # down, hung, breaker open: the stored counts, marked stale
        log.info("bill %s read with stored counts: %s", code, getattr(exc, "detail", exc))
        return bill_out(bill, bags)
    stored = {b["parent_qr"]: b["child_count"] for b in active}
    counts = {qr: int(current[qr]["child_count"]) if qr in current else n for qr, n in stored.items()}
    changed = {qr: n for qr, n in counts.items() if n != stored[qr]}
    counted_at = as_utc(bill["counted_at"])
    if changed or counted_at is None or utcnow() - counted_at > timedelta(seconds=COUNTS_REWRITE_AFTER):
        await run_write(ctx.db, ctx.cache, lambda work: repo.refresh_counts(work, bill["id"], changed))
    bags = [{**b, "child_count": counts.get(b["parent_qr"], b["child_count"])} for b in bags]
    return bill_out({**bill, "actual_weight_kg": sum(counts.values())}, bags, fresh=True)


async def list_bills(*, ctx: BillingContext, limit: int, cursor: str | None, **filters: Any) -> Page[dict]:
    """Newest first; stored counts with their age (a list asks scanning nothing)."""
    async with ctx.db.read() as conn:
        rows = await repo.list_bills(conn, before_id=cursor_position(cursor), limit=limit + 1, **filters)
    return page_of(rows, limit, item=bill_out, key=lambda row: row["id"])


async def edit_bill(*, ctx: BillingContext, principal: Principal, raw: str, body: BillEdit,
                    key: str | None) -> Written[dict]:
    code = bill_code(raw)
    changes = body.model_dump(exclude_unset=True)

    async def edit(work: UnitOfWork) -> dict:
        bill = await _bill(work, code)
        if not await repo.edit(work, bill["id"], changes):
            bill = await _bill(work, code)
            raise Conflict(f"bill {code} holds {bill['linked_count']} parents; capacity cannot go below that",
                           slug="capacity-below-linked", linked_count=bill["linked_count"])
        await repo.record(work, bill, "edit", principal, detail={"from": {k: bill[k] for k in changes}, "to": changes})
        return await _full_view(work, code)

    request = Idempotency.of(principal.user_id, key, "bill-edit", {"bill": code, **changes})
    return await run_write(ctx.db, ctx.cache, edit, idempotency=request)


async def delete_bill(*, ctx: BillingContext, principal: Principal, raw: str) -> None:
    """Delete a bill (admins): its parents are released — free to load onto another bill, and deletable by
    scanning once their marks are cleared (queued here, sent at once, retried until scanning confirms)."""
    code = bill_code(raw)

    async def drop(work: UnitOfWork) -> None:
        bill = await _bill(work, code)
        gone = await repo.delete_bill(work, bill["id"])
        for row in gone:
            await enqueue_clear(work, row["parent_qr"], bill["bill_id"], row["id"])
        await repo.record(work, bill, "delete", principal, detail={"parents": [r["parent_qr"] for r in gone]})

    await run_write(ctx.db, ctx.cache, drop)
    ctx.kick_outbox()


async def complete_bill(*, ctx: BillingContext, principal: Principal, raw: str, key: str | None) -> Written[dict]:
    """Completed once it holds at least one parent and as many as its capacity (else 409 saying what is missing)."""
    code = bill_code(raw)

    async def complete(work: UnitOfWork) -> dict:
        bill = await _bill(work, code)
        if not await repo.complete(work, bill["id"]):
            bill = await _bill(work, code)
            if bill["status"] == "completed":
                raise BillCompleted(f"bill {code} is already completed")
            if bill["linked_count"] < max(1, bill["capacity"]):
                raise Conflict(f"bill {code} holds {bill['linked_count']} of {bill['capacity']} parents; "
                               "load the rest (or lower its capacity) first", slug="bill-not-full",
                               linked_count=bill["linked_count"], capacity=bill["capacity"])
            raise Conflict(f"a parent is still being added to bill {code}; retry in a moment", slug="bill-busy")
        await repo.record(work, bill, "complete", principal)
        return await _full_view(work, code)

    return await run_write(ctx.db, ctx.cache, complete,
                           idempotency=Idempotency.of(principal.user_id, key, "bill-complete", {"bill": code}))


async def reopen_bill(*, ctx: BillingContext, principal: Principal, raw: str, key: str | None) -> Written[dict]:
    code = bill_code(raw)

    async def reopen(work: UnitOfWork) -> dict:
        bill = await _bill(work, code)
        if not await repo.reopen(work, bill["id"]):
            raise Conflict(f"bill {code} is not completed", slug="bill-not-completed")
        await repo.record(work, bill, "reopen", principal)
        return await _full_view(work, code)

    return await run_write(ctx.db, ctx.cache, reopen,
                           idempotency=Idempotency.of(principal.user_id, key, "bill-reopen", {"bill": code}))


# --- loading and removing parents -----------------------------------------------------------------------------

async def add_parent(*, ctx: BillingContext, principal: Principal, raw_bill: str, raw_qr: str,
                     key: str | None) -> Written[dict]:
    """Load a parent: claim a slot and write its row ('pending'), have scanning mark it, activate the row.

    Refusals come before scanning is asked when billing can tell (no bill, completed, full, the parent on a
    bill); the claim itself re-checks them in one statement. Scanning says the parent is missing (404) or not
    a parent (422): the slot is given back. Scanning cannot say: 503 within BILLING_MARK_TIMEOUT, the slot is
    given back and the mark, if it landed after all, is cleared by its link."""
    code, qr = bill_code(raw_bill), _parent_code(raw_qr)
    request = Idempotency.of(principal.user_id, key, "bill-add", {"bill": code, "parent_qr": qr})
    prior = await recorded(ctx.db, request)
    if prior is not None:
        return Written(prior, True)
    async with ctx.db.read() as conn:
        bill = await repo.bill_and_holder(conn, code, qr)
    if bill is None:
        raise no_bill(code)
    if bill["holder_bill_id"] is not None:
        _refuse_parent_on_bill(qr, {"bill_id": bill["holder_bill_id"], "state": bill["holder_state"]}, code)
    _refuse_full(bill)
    # PostgreSQL: the claim and the activation are one statement each (and with no key, so is the activation).
    fast = ctx.db.dialect == "postgresql"

    async def claim(work: UnitOfWork) -> int:
        link = await repo.claim(work, bill["id"], qr, principal.username)
        if link is None:
            _refuse_full(await _bill(work, code))
            raise LostRace
        return link

    try:
        link = (await run_write(ctx.db, ctx.cache, claim, one_statement=fast)).result
    except IntegrityError as exc:  # the parent's row exists: another bill (or this one) got it meanwhile
        async with ctx.db.read() as conn:
            _refuse_parent_on_bill(qr, await repo.holder_of(conn, qr), code)
        raise ParentOnBill(f"parent {qr} was loaded onto a bill a moment ago and is free again; retry") from exc
    try:
        marked = await _mark(ctx, qr, bill["bill_id"], link)
    except ScanningUnavailable:  # it may have marked after all: that mark is cleared by its link
        await _undo(ctx, bill["id"], link, release=True, clear=(qr, bill["bill_id"]))
        raise
    except Exception:
        await _undo(ctx, bill["id"], link, release=True)
        raise

    async def finish(work: UnitOfWork) -> dict | Row:
        now = await repo.activate(work, link, bill, qr, marked.capacity, marked.child_count, principal)
        if now is None:
            raise AddUndone(f"adding {qr} to bill {code} took too long and was undone; retry", retry_after=1)
        if work.one_statement:
            return now  # the view is read after the write (below)
        return bill_out(now, await repo.bill_parents(work.conn, bill["id"]))

    try:
        written = await run_write(ctx.db, ctx.cache, finish, idempotency=request,
                                  one_statement=fast and request is None)
    except AddUndone:  # the reconciler released the row while scanning was slow: the mark goes too
        await _undo(ctx, bill["id"], link, release=False, clear=(qr, bill["bill_id"]))
        raise
    if isinstance(written.result, dict):
        return written
    async with ctx.db.read() as conn:
        return Written(bill_out(written.result, await repo.bill_parents(conn, bill["id"])), False)


class AddUndone(ServiceUnavailable):
    slug = "add-undone"


async def _mark(ctx: BillingContext, qr: str, bill_id: str, link: int) -> marks.Marked:
    """Mark, first clearing a stale mark of another bill. Billing holds this parent on no other bill (its row is
    unique and ours), so such a mark is one whose clear is still queued, or of an add that died: safe to clear."""
    try:
        return await ctx.scanning.mark(qr, bill_id, link)
    except ParentBilledElsewhere as other:
        log.info("parent %s carries a stale mark of bill %s; clearing it", qr, other.bill_id)
        try:
            await ctx.scanning.clear(qr, other.bill_id, other.link)
        except Exception as exc:
            raise ScanningUnavailable(f"scanning could not release {qr} from bill {other.bill_id}; retry") from exc
        try:
            return await ctx.scanning.mark(qr, bill_id, link)
        except ParentBilledElsewhere as again:  # marked again in between: whoever did is still settling it
            raise ParentOnBill(f"parent {qr} is being settled on bill {again.bill_id}; retry in a moment",
                               bill_id=again.bill_id) from None


async def _undo(ctx: BillingContext, bill_pk: int, link: int, *, release: bool,
                clear: tuple[str, str] | None = None) -> None:
    """Give a claimed slot back (`release`: the pending row is dropped) and queue the clear of a mark this add
    may have left (`clear`: the parent and bill; the mark is named by this add's link)."""
    async def undo(work: UnitOfWork) -> None:
        if release:
            await repo.release_pending(work, link, bill_pk)
        if clear is not None:
            await enqueue_clear(work, clear[0], clear[1], link)

    await run_write(ctx.db, ctx.cache, undo)
    if clear is not None:
        ctx.kick_outbox()


def _refuse_parent_on_bill(qr: str, holder: Row | None, code: str) -> None:
    if holder is None:
        return
    if holder["state"] == "pending":
        raise ParentOnBill(f"parent {qr} is being added to bill {holder['bill_id']} right now",
                           bill_id=holder["bill_id"])
    where = "this bill" if holder["bill_id"] == code else f"bill {holder['bill_id']}"
    raise ParentOnBill(f"parent {qr} is already on {where}", bill_id=holder["bill_id"])


def _refuse_full(bill: Row) -> None:
    if bill["status"] == "completed":
        raise BillCompleted(f"bill {bill['bill_id']} is completed; reopen it to load more")
    if bill["linked_count"] >= bill["capacity"]:
        raise BillFull(f"bill {bill['bill_id']} is full ({bill['linked_count']}/{bill['capacity']})",
                       capacity=bill["capacity"])


async def remove_parent(*, ctx: BillingContext, principal: Principal, raw_bill: str, raw_qr: str,
                        key: str | None) -> Written[dict]:
    """Take a parent off a bill: the bill is recalculated (a completed one reopens), and scanning's mark is
    cleared through the outbox, so this works while scanning is down."""
    code, qr = bill_code(raw_bill), _parent_code(raw_qr)

    async def take_off(work: UnitOfWork) -> dict:
        bill = await _bill(work, code)
        row = await repo.remove_parent(work, bill["id"], qr)
        if row is None:
            holder = await repo.holder_of(work, qr)
            if holder is not None and holder["id"] == bill["id"]:
                raise Conflict(f"parent {qr} is still being added to bill {code}; retry in a moment", slug="bill-busy")
            raise NotFound(f"parent {qr} is not on bill {code}", slug="not-on-bill")
        await enqueue_clear(work, qr, bill["bill_id"], row["id"])
        await repo.record(work, bill, "remove", principal, parent_qr=qr)
        return await _full_view(work, code)

    request = Idempotency.of(principal.user_id, key, "bill-remove", {"bill": code, "parent_qr": qr})
    written = await run_write(ctx.db, ctx.cache, take_off, idempotency=request)
    if not written.replayed:
        ctx.kick_outbox()
    return written


# --- history, summary, export ---------------------------------------------------------------------------------

async def bill_history(*, ctx: BillingContext, raw: str, limit: int, cursor: str | None) -> Page[BillEventOut]:
    code = bill_code(raw)
    async with ctx.db.read() as conn:
        bill = await _bill(conn, code)
        rows = await repo.history(conn, bill["id"], after_id=cursor_position(cursor), limit=limit + 1)
    return page_of(rows, limit, item=_event_out, key=lambda row: row["id"])


def _event_out(row: Row) -> BillEventOut:
    return BillEventOut(id=row["id"], bill_id=row["bill_id"], kind=row["kind"], parent_qr=row["parent_qr"],
                        detail=json.loads(row["detail"]) if row["detail"] else None, username=row["username"],
                        created_at=row["created_at"])


async def day_summary(*, ctx: BillingContext, day: date | None) -> DaySummary:
    """Bills created on a day of the warehouse (BAGTRACK_TIMEZONE), by status and by creator, with totals."""
    day, start, end = local_day(ctx.settings.zone, day)
    async with ctx.db.read() as conn:
        rows = await repo.day_summary(conn, start, end)
    totals, by_status, by_creator = Totals(), {}, {}
    for row in rows:
        figures = Totals(bills=row["bills"], bags=row["bags"], expected_weight_kg=row["expected_weight_kg"],
                         actual_weight_kg=row["actual_weight_kg"])
        creator = by_creator.setdefault(row["created_by"], CreatorSummary(by_status={}))
        creator.by_status[row["status"]] = figures
        for total in (totals, by_status.setdefault(row["status"], Totals()), creator):
            for name in Totals.model_fields:
                setattr(total, name, getattr(total, name) + getattr(figures, name))
    return DaySummary(date=day, timezone=ctx.settings.timezone, totals=totals, by_status=by_status,
                      by_creator=by_creator)


CSV_COLUMNS = ("bill_id", "status", "capacity", "linked_count", "expected_weight_kg", "actual_weight_kg",
               "description", "destination", "vehicle_number", "created_by", "created_at", "completed_at")


async def export_csv(db: Database, filters: dict[str, Any]) -> AsyncIterator[str]:
    """Every matching bill as CSV, from a server-side cursor (flat memory)."""
    async def rows() -> AsyncIterator[list]:
        async with db.read() as conn:
            async for row in repo.stream_bills(conn, **filters):
                yield [_csv_value(row[name]) for name in CSV_COLUMNS]

    async for chunk in csv_chunks(CSV_COLUMNS, rows()):
        yield chunk


def _csv_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    return "" if value is None else value


# --- background jobs ------------------------------------------------------------------------------------------

async def work_outbox(app: FastAPI) -> None:
    await app.state.billing.deliver_outbox()


async def reconcile(app: FastAPI) -> None:
    """Settle adds that died half-way and clear marks no bill holds (services/billing/marks.py)."""
    ctx: BillingContext = app.state.billing
    s = ctx.settings
    await marks.settle_pending(ctx.db, ctx.cache, ctx.scanning, grace=s.pending_grace)
    queued, ctx.strays_checked_until = await marks.clear_strays(
        ctx.db, ctx.cache, ctx.scanning, window=s.reconcile_window, grace=s.pending_grace,
        since=ctx.strays_checked_until)
    if queued:
        ctx.kick_outbox()


async def purge_old_keys(app: FastAPI) -> None:
    ctx: BillingContext = app.state.billing
    await purge_idempotency_keys(ctx.db, ctx.cache, utcnow() - timedelta(hours=ctx.settings.idempotency_ttl_hours))
