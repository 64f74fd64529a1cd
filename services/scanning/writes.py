"""The scanning writes' rules (SPEC §2): parent and child scans, unlink, delete — each through the one unit of
work (shared.unit_of_work). A scan is one statement on PostgreSQL; its facts decide the answer here."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fastapi import FastAPI

from services.scanning import repository as repo
from services.scanning import scan_sql
from services.scanning.config import Settings
from services.scanning.qr import any_code, child_code, parent_code
from services.scanning.schemas import ScanResult
from services.scanning.views import (area_scope, child_scan_result, may_see, no_bag, parent_scan_result,
                                     unlink_result)
from shared.cache import Cache
from shared.db import Database
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from shared.security import Principal
from shared.timeutil import utcnow
from shared.unit_of_work import Idempotency, LostRace, UnitOfWork, Written, purge_idempotency_keys, run_write


class ParentFull(Conflict):
    slug = "parent-full"


class ChildOnAnotherParent(Conflict):
    slug = "child-on-another-parent"


class ParentBilled(Conflict):
    """A parent billing has marked as on a bill (services/scanning/marks.py): it is not deleted, nor put on a
    second bill, until that bill clears the mark."""

    slug = "parent-billed"

    def __init__(self, qr: str, bill_id: str, **extra) -> None:
        super().__init__(f"parent {qr} is on bill {bill_id}; remove it from the bill first", bill_id=bill_id,
                         **extra)


class ChildNotYours(Conflict):
    """A dispatcher's child scan of a child in another area. A 409, not the 404 of a missing bag: the scan
    creates a missing child, so "no bag" would contradict itself. One answer whether the child is linked there
    or not, naming neither that area nor the parent holding it."""

    slug = "child-not-yours"


@dataclass
class ScanningContext:
    """What the rules need beyond the request; built once at start-up."""

    settings: Settings
    db: Database
    cache: Cache

    @property
    def one_statement(self) -> bool:
        """PostgreSQL runs each scan as one statement; SQLite as a short transaction (no writable CTEs)."""
        return self.db.dialect == "postgresql"


async def build_context(app: FastAPI) -> None:
    """Start-up hook: the scanning context on app.state."""
    state = app.state
    state.scanning = ScanningContext(state.settings, state.db, state.cache)


def cache_key(qr: str) -> str:
    return f"bag:{qr}"


async def record_parent_scan(*, ctx: ScanningContext, principal: Principal, raw_qr: str, area: str | None,
                             key: str | None) -> Written[ScanResult]:
    """Select a parent, creating it in the scanner's area on its first scan; a scan row either way. Another
    area's parent is `no_bag` to a dispatcher (the statement selects it only within their area)."""
    qr, capacity = parent_code(ctx.settings, raw_qr)
    new_area = principal.dispatch_area if principal.role == "dispatcher" else (
        ctx.settings.known_area(area) if area else None)

    async def scan(work: UnitOfWork) -> dict | None:
        facts = await scan_sql.parent_scan(work, qr=qr, capacity=capacity, new_area=new_area,
                                           area=area_scope(principal), user_id=principal.user_id,
                                           username=principal.username)
        if facts is None:
            return facts  # a replay
        if facts["created"]:
            # Nothing can have cached a bag that did not exist, but the tombstone also sends its lookups to the
            # primary while a read replica may not have it yet (shared.db.Database.tombstone_hold).
            work.touch(cache_key(qr))
            return facts
        if facts["found"] is None:
            if new_area is None:
                raise InvalidInput("a new parent needs dispatch_area when scanned by an admin")
            raise LostRace  # created by someone else after our snapshot: select theirs
        if not may_see(principal, facts["found"]["dispatch_area"]):
            raise no_bag(qr)
        return facts

    request = Idempotency.of(principal.user_id, key, "scan-parent", {"qr_id": qr, "dispatch_area": area})
    written = await run_write(ctx.db, ctx.cache, scan, idempotency=request, one_statement=ctx.one_statement)
    return Written(parent_scan_result(written.result), written.replayed)


async def record_child_scan(*, ctx: ScanningContext, principal: Principal, raw_parent: str, raw_child: str,
                            key: str | None) -> Written[ScanResult]:
    """Create the child if new and link it to the parent; a repeat on the same parent changes nothing.

    A dispatcher sees another area's parent as one never scanned, and may not link another area's child
    (`ChildNotYours`, also for a child on a parent they may not see): linking would move it into their area."""
    parent_qr, _ = parent_code(ctx.settings, raw_parent)
    child_qr = child_code(ctx.settings, raw_child)

    async def scan(work: UnitOfWork) -> dict | None:
        facts = await scan_sql.child_scan(work, parent_qr=parent_qr, child_qr=child_qr, area=area_scope(principal),
                                          user_id=principal.user_id, username=principal.username)
        if facts is None:
            return None
        parent, child = facts["parent"], facts["child"]
        if parent is None or not may_see(principal, parent["dispatch_area"]):
            raise NotFound(f"parent {parent_qr} has not been scanned yet; scan it as a parent first")
        if facts["claimed"] is not None:
            work.touch(cache_key(parent_qr), cache_key(child_qr))
            return facts
        if child is not None and child["parent_id"] == parent["id"]:
            return facts  # a repeat: flagged, nothing changed
        if child is not None and not may_see(principal, child["dispatch_area"]):
            # A linked child is in its parent's area, so this is also every child on a parent the caller may
            # not see: the parent that holds it is not named.
            raise ChildNotYours(f"child {child_qr} is not in your dispatch area; a biller or admin can move it")
        if child is not None and child["parent_id"] is not None:
            raise ChildOnAnotherParent(f"child {child_qr} is already on parent {child['parent_qr']}",
                                       parent_qr=child["parent_qr"])
        if parent["child_count"] >= parent["capacity"]:
            raise ParentFull(f"parent {parent_qr} is full ({parent['capacity']}/{parent['capacity']})",
                             parent_qr=parent_qr, capacity=parent["capacity"])
        raise LostRace  # the child was taken or the parent filled after our snapshot: look again

    request = Idempotency.of(principal.user_id, key, "scan-child", {"parent_qr": parent_qr, "child_qr": child_qr})
    written = await run_write(ctx.db, ctx.cache, scan, idempotency=request, one_statement=ctx.one_statement)
    return Written(child_scan_result(written.result), written.replayed)


async def unlink_child(*, ctx: ScanningContext, principal: Principal, raw_parent: str, raw_child: str,
                       key: str | None) -> Written[ScanResult]:
    """Undo a link: a dispatcher their own within the window, billers and admins any time. A parent or child
    in another area is `no_bag` to a dispatcher."""
    parent_qr, child_qr = any_code(ctx.settings, raw_parent), any_code(ctx.settings, raw_child)
    own_only = principal.role == "dispatcher"
    window = ctx.settings.unlink_window_seconds

    async def take_off(work: UnitOfWork) -> dict | None:
        facts = await scan_sql.unlink(work, parent_qr=parent_qr, child_qr=child_qr, area=area_scope(principal),
                                      own_only=own_only, window=window, user_id=principal.user_id,
                                      username=principal.username)
        if facts is None:
            return None
        parent, child = facts["parent"], facts["child"]
        if parent is None or not may_see(principal, parent["dispatch_area"]):
            raise no_bag(parent_qr)
        if child is None or not may_see(principal, child["dispatch_area"]):
            raise no_bag(child_qr)
        if facts["released"] is not None:
            work.touch(cache_key(parent_qr), cache_key(child_qr))
            return facts
        if child["parent_id"] != parent["id"]:
            raise Conflict(f"child {child_qr} is not on parent {parent_qr}")
        if own_only and child["linked_by"] != principal.user_id:
            raise Forbidden("dispatchers can undo only their own links; ask a biller or admin")
        if own_only and not child["in_window"]:
            raise Forbidden(f"the {window // 60}-minute undo window has passed; ask a biller or admin")
        raise LostRace

    request = Idempotency.of(principal.user_id, key, "unlink", {"parent_qr": parent_qr, "child_qr": child_qr})
    written = await run_write(ctx.db, ctx.cache, take_off, idempotency=request, one_statement=ctx.one_statement)
    return Written(unlink_result(written.result), written.replayed)


async def delete_bag(*, ctx: ScanningContext, raw_qr: str) -> None:
    """Delete an empty parent on no bill, or an unlinked child: one conditional DELETE, decided under the row lock
    that a concurrent link or bill mark takes, so a parent is never both deleted and billed. Only when it deletes
    nothing does a re-read say why. Only billers and admins get here (deps.Deleter), and they see every area and
    every bill: no area rule applies, and a refusal may name the bill."""
    qr = any_code(ctx.settings, raw_qr)

    async def remove(work: UnitOfWork) -> None:
        if not await repo.delete_empty_bag(work, qr):
            _refuse(await repo.get_bag(work.conn, qr), qr)
            raise LostRace  # deletable by now (a mark cleared, a child unlinked meanwhile): once more
        work.touch(cache_key(qr))

    await run_write(ctx.db, ctx.cache, remove)


def _refuse(bag, qr: str) -> None:
    """Raise what keeps `bag` from being deleted, if anything does."""
    if bag is None:
        raise no_bag(qr)
    if bag["bill_id"] is not None:  # first: unlinking its children would change the bill's weight
        raise ParentBilled(qr, bag["bill_id"])
    if bag["type"] == "parent" and bag["child_count"]:
        raise Conflict(f"parent {qr} still holds {bag['child_count']} children; unlink them first")
    if bag["type"] == "child" and bag["parent_id"]:
        raise Conflict(f"child {qr} is on parent {bag['parent_qr']}; unlink it first")


async def purge_old_keys(app: FastAPI) -> None:
    """Background job: idempotency keys older than SCANNING_IDEMPOTENCY_TTL_HOURS go, in batches."""
    ctx: ScanningContext = app.state.scanning
    before = utcnow() - timedelta(hours=ctx.settings.idempotency_ttl_hours)
    await purge_idempotency_keys(ctx.db, ctx.cache, before)
