"""The scanning rules: parent and child scans, unlink, delete, lookup, lists — per SPEC §2."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import anyio
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from services.scanning import repository as repo
from services.scanning.config import Settings
from services.scanning.models import Bag, Scan
from services.scanning.qr import classify, normalize_qr
from services.scanning.schemas import BagOut, ScanOut, ScanResult
from shared.cache import TOMBSTONE, Cache
from shared.db import Database
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound, ProblemError, ServiceUnavailable
from shared.pagination import Page, cursor_position, page_of
from shared.security import Principal
from shared.timeutil import as_utc, utcnow
from shared.unit_of_work import commit, touch

log = logging.getLogger("bagtrack.scanning")

# A race lost to a concurrent scan of the same new bag is re-run with the winner's row; twice is plenty.
ATTEMPTS = 3


class InvalidQr(ProblemError):
    status, slug = 422, "invalid-qr"


class ParentFull(Conflict):
    slug = "parent-full"


class ChildOnAnotherParent(Conflict):
    slug = "child-on-another-parent"


@dataclass
class ScanningContext:
    settings: Settings
    cache: Cache


def cache_key(qr: str) -> str:
    return f"bag:{qr}"


# --- QR handling -------------------------------------------------------------------------------------

def parent_code(ctx: ScanningContext, raw: str) -> tuple[str, int]:
    qr = normalize_qr(raw)
    kind = classify(qr, ctx.settings)
    if kind is None or not kind.is_parent:
        what = "a child QR" if kind else "not a known QR format"
        raise InvalidQr(f"{qr or raw!r} is {what}; a parent QR looks like SB12345 or M444-12345", qr_id=qr)
    return qr, kind.capacity


def child_code(ctx: ScanningContext, raw: str) -> str:
    qr = normalize_qr(raw)
    kind = classify(qr, ctx.settings)
    if kind is None:
        raise InvalidQr(f"{qr or raw!r} is not a child QR: 4-20 characters of A-Z, 0-9 and '-'", qr_id=qr)
    if kind.is_parent:
        raise InvalidQr(f"{qr} is a parent QR; it cannot be packed into another parent", qr_id=qr)
    return qr


_FILTER_QR = re.compile(r"^[A-Z0-9-]{1,32}$")


def filter_code(raw: str | None) -> str | None:
    """A QR (or QR prefix) used as a list filter: normalised, and only the characters codes are made of."""
    if not raw:
        return None
    qr = normalize_qr(raw)
    if not _FILTER_QR.match(qr):
        raise InvalidQr(f"{raw!r} cannot be part of a bag QR (A-Z, 0-9 and '-' only)")
    return qr


def any_code(ctx: ScanningContext, raw: str) -> str:
    qr = normalize_qr(raw)
    if classify(qr, ctx.settings) is None:
        raise InvalidQr(f"{qr or raw!r} is not a bag QR", qr_id=qr)
    return qr


# --- views -------------------------------------------------------------------------------------------

def weight_kg(bag_type: str, child_count: int) -> int:
    """1 kg a child: a parent weighs what it holds."""
    return child_count if bag_type == "parent" else 1


def bag_out(bag: Bag, parent_qr: str | None, children: list[str] | None = None) -> BagOut:
    return BagOut(
        qr_id=bag.qr_id, type=bag.type, status=bag.status, dispatch_area=bag.dispatch_area,
        child_count=bag.child_count, capacity=bag.capacity,
        weight_kg=weight_kg(bag.type, bag.child_count),
        parent_qr=parent_qr, children=children, created_by=bag.created_by, created_at=bag.created_at,
    )


def bag_view(session: Session, bag: Bag) -> BagOut:
    """A bag with its parent's QR (a child) or its children's QRs (a parent)."""
    if bag.type == "parent":
        return bag_out(bag, None, repo.children_qrs(session, bag.id) if bag.child_count else [])
    return bag_out(bag, repo.qr_of(session, bag.parent_id) if bag.parent_id else None)


def check_area(principal: Principal, area: str) -> None:
    """Dispatchers work in their own area; billers and admins see every area."""
    if principal.role == "dispatcher" and principal.dispatch_area != area:
        raise Forbidden(f"this bag belongs to area {area!r}; you dispatch for {principal.dispatch_area!r}")


def _scan(principal: Principal, kind: str, parent_qr: str, child_qr: str | None, area: str, now: datetime,
          repeat: bool = False) -> Scan:
    return Scan(kind=kind, parent_qr=parent_qr, child_qr=child_qr, dispatch_area=area, user_id=principal.user_id,
                username=principal.username, repeat=repeat, created_at=now)


def _set_counts(bag: Bag, counts: tuple[int, str]) -> None:
    # Values the UPDATE ... RETURNING reported: recorded as loaded state, so nothing is written twice.
    set_committed_value(bag, "child_count", counts[0])
    set_committed_value(bag, "status", counts[1])


# --- writes (the caller commits once, then invalidates what was touched) -------------------------------

def record_parent_scan(*, session: Session, ctx: ScanningContext, principal: Principal, raw_qr: str,
                       area: str | None = None) -> ScanResult:
    """Select a parent, creating it in the scanner's area on its first scan; a scan row either way."""
    qr, capacity = parent_code(ctx, raw_qr)
    for _ in range(ATTEMPTS):
        now = utcnow()
        bag = repo.get_bag(session, qr)
        created = bag is None
        if created:
            bag = Bag(qr_id=qr, type="parent", status="pending", dispatch_area=_new_parent_area(ctx, principal, area),
                      capacity=capacity, child_count=0, created_by=principal.username, created_at=now, updated_at=now)
            try:
                repo.insert_bag(session, bag)
            except IntegrityError:
                session.rollback()  # scanned by someone else a moment ago: select theirs
                continue
            touch(session, cache_key(qr))
        else:
            check_area(principal, bag.dispatch_area)
        repo.add_scan(session, _scan(principal, "parent", qr, None, bag.dispatch_area, now, repeat=not created))
        return ScanResult(parent=bag_view(session, bag), repeat=not created, created=created)
    raise ServiceUnavailable("too much contention on this parent; retry")


def _new_parent_area(ctx: ScanningContext, principal: Principal, area: str | None) -> str:
    if principal.role == "dispatcher":
        return principal.dispatch_area
    if not area:
        raise InvalidInput("a new parent needs dispatch_area when scanned by an admin")
    return ctx.settings.known_area(area)


def record_child_scan(*, session: Session, ctx: ScanningContext, principal: Principal, raw_parent: str,
                      raw_child: str) -> ScanResult:
    """Create the child if new and link it to the parent; a repeat on the same parent changes nothing."""
    parent_qr, _ = parent_code(ctx, raw_parent)
    child_qr = child_code(ctx, raw_child)
    for _ in range(ATTEMPTS):
        now = utcnow()
        parent = repo.get_bag(session, parent_qr)
        if parent is None or parent.type != "parent":
            raise NotFound(f"parent {parent_qr} has not been scanned yet; scan it as a parent first")
        check_area(principal, parent.dispatch_area)
        child = repo.get_bag(session, child_qr)
        if child is not None and child.parent_id == parent.id:
            repo.add_scan(session, _scan(principal, "child", parent_qr, child_qr, parent.dispatch_area, now, repeat=True))
            return ScanResult(parent=bag_view(session, parent), child=bag_out(child, parent_qr), repeat=True)
        if child is not None and child.parent_id is not None:
            other = repo.qr_of(session, child.parent_id)
            raise ChildOnAnotherParent(f"child {child_qr} is already on parent {other}", parent_qr=other)
        # Lost races (the same child scanned onto a parent at this very moment) roll back and look again.
        created = child is None
        if created:
            try:
                child = repo.insert_bag(session, Bag(
                    qr_id=child_qr, type="child", status="completed", dispatch_area=parent.dispatch_area,
                    capacity=None, child_count=0, parent_id=parent.id, linked_by=principal.user_id, linked_at=now,
                    created_by=principal.username, created_at=now, updated_at=now))
            except IntegrityError:
                session.rollback()
                continue
        elif not repo.link_child(session, child.id, parent.id, area=parent.dispatch_area,
                                 user_id=principal.user_id, now=now):
            session.rollback()
            continue
        counts = repo.claim_parent_slot(session, parent.id, now)
        if counts is None:
            raise ParentFull(f"parent {parent_qr} is full ({parent.capacity}/{parent.capacity})",
                             parent_qr=parent_qr, capacity=parent.capacity)
        _set_counts(parent, counts)
        repo.add_scan(session, _scan(principal, "child", parent_qr, child_qr, parent.dispatch_area, now))
        touch(session, cache_key(parent_qr), cache_key(child_qr))
        session.refresh(child)
        return ScanResult(parent=bag_view(session, parent), child=bag_out(child, parent_qr), repeat=False,
                          created=created)
    raise ServiceUnavailable("too much contention on this child; retry")


def unlink_child(*, session: Session, ctx: ScanningContext, principal: Principal, raw_parent: str,
                 raw_child: str) -> ScanResult:
    """Undo a link: a dispatcher their own within the window, billers and admins any time."""
    parent_qr, child_qr = any_code(ctx, raw_parent), any_code(ctx, raw_child)
    parent, child = repo.get_bag(session, parent_qr), repo.get_bag(session, child_qr)
    if parent is None or child is None:
        raise NotFound(f"no bag {parent_qr if parent is None else child_qr}")
    check_area(principal, parent.dispatch_area)
    if child.parent_id != parent.id:
        raise Conflict(f"child {child_qr} is not on parent {parent_qr}")
    now = utcnow()
    if principal.role == "dispatcher":
        window = ctx.settings.unlink_window_seconds
        if child.linked_by != principal.user_id:
            raise Forbidden("dispatchers can undo only their own links; ask a biller or admin")
        if child.linked_at is None or as_utc(child.linked_at) + timedelta(seconds=window) < now:
            raise Forbidden(f"the {window // 60}-minute undo window has passed; ask a biller or admin")
    if not repo.unlink_child(session, child.id, parent.id, now):
        raise Conflict(f"child {child_qr} was unlinked or moved meanwhile")
    _set_counts(parent, repo.release_parent_slot(session, parent.id, now))
    repo.add_scan(session, _scan(principal, "unlink", parent_qr, child_qr, parent.dispatch_area, now))
    touch(session, cache_key(parent_qr), cache_key(child_qr))
    session.refresh(child)
    return ScanResult(parent=bag_view(session, parent), child=bag_out(child, None), repeat=False)


def delete_bag(*, db: Database, ctx: ScanningContext, principal: Principal, raw_qr: str,
               bill_of: Callable[[str], str | None]) -> None:
    """Delete an empty parent that is on no bill, or an unlinked child. Billing unreachable: 503, never a guess."""
    qr = any_code(ctx, raw_qr)
    with db.session(read_only=True) as session:
        bag = _deletable(session, qr)
        is_parent = bag.type == "parent"
    # Asked between transactions, so no database connection waits on another service.
    bill = bill_of(qr) if is_parent else None
    if bill:
        raise Conflict(f"parent {qr} is on bill {bill}; remove it from the bill first", bill_id=bill)
    with db.session() as session:
        bag = _deletable(session, qr)  # again: it may have changed while billing answered
        repo.delete_bag(session, bag.id)
        touch(session, cache_key(qr))
        try:
            commit(session, ctx.cache)
        except IntegrityError as exc:  # a child was linked to it in the last moment
            raise Conflict(f"parent {qr} gained a child meanwhile; unlink it first") from exc


def _deletable(session: Session, qr: str) -> Bag:
    bag = repo.get_bag(session, qr)
    if bag is None:
        raise NotFound(f"no bag {qr}")
    if bag.type == "parent" and bag.child_count:
        raise Conflict(f"parent {qr} still holds {bag.child_count} children; unlink them first")
    if bag.type == "child" and bag.parent_id:
        raise Conflict(f"child {qr} is on parent {repo.qr_of(session, bag.parent_id)}; unlink it first")
    return bag


# --- reads -------------------------------------------------------------------------------------------

async def lookup(*, db: Database, ctx: ScanningContext, principal: Principal, raw_qr: str) -> bytes:
    """One bag with its parent or children, as JSON: from the cache when it has it, else the database (then cached).

    A hit costs one async cache read on the event loop: no thread, no parsing beyond the area check, no
    re-validation (the cache holds the finished JSON). A miss reads the database in the threadpool.
    """
    qr = any_code(ctx, raw_qr)
    key = cache_key(qr)
    raw = await ctx.cache.aget(key)
    if raw is None or raw == TOMBSTONE:
        raw = await anyio.to_thread.run_sync(_load_view, db, ctx, qr)
    check_area(principal, _area_of(raw))
    return raw


def _load_view(db: Database, ctx: ScanningContext, qr: str) -> bytes:
    with db.session(read_only=True) as session:
        bag, parent_qr, children = repo.bag_with_relatives(session, qr)
        if bag is None:
            raise NotFound(f"no bag {qr}")
        raw = bag_out(bag, parent_qr, children if bag.type == "parent" else None).model_dump_json().encode()
    ctx.cache.add(cache_key(qr), raw, ctx.settings.lookup_cache_seconds)
    return raw


def _area_of(raw: bytes) -> str:
    return json.loads(raw)["dispatch_area"]


def scoped_area(principal: Principal, area: str | None) -> str | None:
    """The area a list may show: a dispatcher's own, whatever they asked for."""
    if principal.role != "dispatcher":
        return area.lower() if area else None
    if area and area.lower() != principal.dispatch_area:
        raise Forbidden(f"you dispatch for {principal.dispatch_area!r}; other areas are not yours to see")
    return principal.dispatch_area


def list_bags(*, session: Session, principal: Principal, limit: int, cursor: str | None, q: str | None,
              parent_qr: str | None, **filters) -> Page[BagOut]:
    filters["area"] = scoped_area(principal, filters.get("area"))
    prefix = filter_code(q)
    position = {"after_qr": cursor_position(cursor, str)} if prefix else {"after_id": cursor_position(cursor)}
    rows = repo.list_bags(session, limit=limit + 1, qr_prefix=prefix,
                          parent_qr=filter_code(parent_qr), **position, **filters)
    return page_of(rows, limit, item=lambda row: bag_out(row[0], row[1]),
                   key=lambda row: row[0].qr_id if prefix else row[0].id)


def list_scans(*, session: Session, principal: Principal, limit: int, cursor: str | None, qr: str | None,
               **filters) -> Page[ScanOut]:
    filters["area"] = scoped_area(principal, filters.get("area"))
    scans = repo.list_scans(session, after_id=cursor_position(cursor), limit=limit + 1,
                            qr=filter_code(qr), **filters)
    return page_of(scans, limit, item=ScanOut.model_validate, key=lambda scan: scan.id)
