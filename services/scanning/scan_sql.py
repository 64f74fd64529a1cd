"""The scan writes' SQL: on PostgreSQL each is ONE statement (one round trip, atomic by itself, in autocommit);
on SQLite, which has no data-modifying CTEs, the same steps as a short transaction.

Each returns the write's *facts* — what it found and what it changed — as a JSON-able dict; services.scanning.
writes turns them into a decision (an answer, a 4xx, or "lost a race: run again") and services.scanning.views
into the answer. The facts are also what an idempotency key records, so a replay is answered by the same code.

On PostgreSQL a write only happens when the snapshot says the rules allow it: the caller's area, no replay, a
free child, room on the parent. What a concurrent writer changes after the snapshot is caught by the rows' own
guards — `ON CONFLICT DO NOTHING` for a new bag, `parent_id IS NULL` and the caller's area for a link (so a
dispatcher never moves another area's child into theirs), the capacity CHECK for the count (a violation aborts
the whole statement) — and reported as a lost race, which the unit of work re-runs.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any, Mapping

from sqlalchemy import case, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from services.scanning.models import Bag, Scan
from shared.timeutil import as_utc, utcnow
from shared.unit_of_work import PRIOR_CTE, LostRace, UnitOfWork, on_idempotency_key, record_cte

bags, scans = Bag.__table__, Scan.__table__
BAG = "id, qr_id, type, status, dispatch_area, capacity, child_count, created_by, created_at"
BAG_COLUMNS = tuple(c.strip() for c in BAG.split(","))
CHILDREN = "(SELECT COALESCE(json_agg(qr_id ORDER BY id), '[]') FROM bags WHERE parent_id = (SELECT id FROM {}))"
AREA_OK = "(:area IS NULL OR {}.dispatch_area = :area)"
# Every parameter's type, written into the SQL as a cast: PostgreSQL cannot deduce a type from `$1 IS NULL` or
# from an INSERT's SELECT list, and one parameter used in two contexts must not be deduced two ways.
PARAM_TYPES = {"qr": "varchar", "parent_qr": "varchar", "child_qr": "varchar", "area": "varchar",
               "new_area": "varchar", "capacity": "smallint", "user_id": "integer", "username": "varchar",
               "own_only": "boolean", "window": "double precision"}


def typed(sql: str) -> str:
    """`sql` with each of its parameters cast to its type from PARAM_TYPES."""
    return re.sub(r"(?<![:\w]):(\w+)\b",
                  lambda m: f"CAST(:{m[1]} AS {PARAM_TYPES[m[1]]})" if m[1] in PARAM_TYPES else m[0], sql)


def one_statement(body: str, facts: str, written: str):
    """A scan write as one statement: the key's earlier record (`prior`), the write's own CTEs (`body`), its facts
    (the arguments of a json_build_object), and the key's record when `written` (SQL) says the write happened.
    It returns the prior record's fingerprint and result, and the facts."""
    return text(typed(f"""
WITH {PRIOR_CTE},
{body},
facts AS (SELECT json_build_object({facts})::text AS facts),
{record_cte("(SELECT facts FROM facts)", written)}
SELECT (SELECT fingerprint FROM prior) AS prior_fingerprint, (SELECT response FROM prior) AS prior_response,
       (SELECT facts FROM facts) AS facts"""))


PARENT_SCAN = one_statement(f"""
found AS (SELECT {BAG} FROM bags WHERE qr_id = :qr AND type = 'parent'),
created AS (
    INSERT INTO bags (qr_id, type, status, dispatch_area, capacity, child_count, created_by, created_at, updated_at)
    SELECT :qr, 'parent', 'pending', :new_area, :capacity, 0, :username, now(), now()
    WHERE NOT EXISTS (SELECT 1 FROM prior) AND NOT EXISTS (SELECT 1 FROM found) AND :new_area IS NOT NULL
    ON CONFLICT (qr_id) DO NOTHING
    RETURNING {BAG}),
selected AS (
    SELECT * FROM created
    UNION ALL SELECT * FROM found WHERE NOT EXISTS (SELECT 1 FROM prior) AND {AREA_OK.format("found")}),
scan AS (
    INSERT INTO scans (kind, parent_qr, dispatch_area, user_id, username, repeat, created_at)
    SELECT 'parent', :qr, dispatch_area, :user_id, :username, NOT EXISTS (SELECT 1 FROM created), now()
    FROM selected)""",
    facts=f"""'found', (SELECT row_to_json(found) FROM found), 'created', (SELECT row_to_json(created) FROM created),
              'children', {CHILDREN.format("found")}""",
    written="EXISTS (SELECT 1 FROM selected)")

CHILD_SCAN = one_statement(f"""
parent AS (SELECT {BAG} FROM bags WHERE qr_id = :parent_qr AND type = 'parent'),
child AS (
    SELECT c.id, c.qr_id, c.type, c.status, c.dispatch_area, c.parent_id, p.qr_id AS parent_qr, c.created_by,
           c.created_at
    FROM bags c LEFT JOIN bags p ON p.id = c.parent_id WHERE c.qr_id = :child_qr),
writable AS (
    SELECT id, dispatch_area FROM parent
    WHERE NOT EXISTS (SELECT 1 FROM prior) AND {AREA_OK.format("parent")}),
open_parent AS (SELECT w.* FROM writable w, parent WHERE parent.child_count < parent.capacity),
inserted AS (
    INSERT INTO bags (qr_id, type, status, dispatch_area, child_count, parent_id, linked_by, linked_at,
                      created_by, created_at, updated_at)
    SELECT :child_qr, 'child', 'completed', dispatch_area, 0, id, :user_id, now(), :username, now(), now()
    FROM open_parent WHERE NOT EXISTS (SELECT 1 FROM child)
    ON CONFLICT (qr_id) DO NOTHING
    RETURNING id, qr_id, type, status, dispatch_area, created_by, created_at),
relinked AS (
    UPDATE bags SET parent_id = o.id, dispatch_area = o.dispatch_area, status = 'completed', linked_by = :user_id,
                    linked_at = now(), updated_at = now()
    FROM open_parent o, child
    WHERE bags.id = child.id AND child.parent_id IS NULL AND bags.parent_id IS NULL AND {AREA_OK.format("bags")}
    RETURNING bags.id, bags.qr_id, bags.type, bags.status, bags.dispatch_area, bags.created_by, bags.created_at),
linked AS (SELECT * FROM inserted UNION ALL SELECT * FROM relinked),
claimed AS (
    UPDATE bags SET child_count = child_count + 1,
                    status = CASE WHEN child_count + 1 >= capacity THEN 'completed' ELSE 'in_progress' END,
                    updated_at = now()
    WHERE id = (SELECT id FROM open_parent) AND EXISTS (SELECT 1 FROM linked)
    RETURNING child_count, status),
repeated AS (SELECT 1 FROM writable, child WHERE child.parent_id = writable.id),
scan AS (
    INSERT INTO scans (kind, parent_qr, child_qr, dispatch_area, user_id, username, repeat, created_at)
    SELECT 'child', :parent_qr, :child_qr, dispatch_area, :user_id, :username, EXISTS (SELECT 1 FROM repeated), now()
    FROM writable WHERE EXISTS (SELECT 1 FROM claimed) OR EXISTS (SELECT 1 FROM repeated))""",
    facts=f"""'parent', (SELECT row_to_json(parent) FROM parent), 'child', (SELECT row_to_json(child) FROM child),
              'linked', (SELECT row_to_json(linked) FROM linked), 'created', EXISTS (SELECT 1 FROM inserted),
              'claimed', (SELECT row_to_json(claimed) FROM claimed), 'children', {CHILDREN.format("parent")}""",
    written="EXISTS (SELECT 1 FROM claimed) OR EXISTS (SELECT 1 FROM repeated)")

UNLINK = one_statement(f"""
parent AS (SELECT {BAG} FROM bags WHERE qr_id = :parent_qr),
child AS (
    SELECT id, qr_id, type, status, dispatch_area, parent_id, linked_by, created_by, created_at,
           COALESCE(linked_at >= now() - make_interval(secs => :window), false) AS in_window
    FROM bags WHERE qr_id = :child_qr),
allowed AS (
    SELECT child.id AS child_id, parent.id AS parent_id FROM parent, child
    WHERE child.parent_id = parent.id AND NOT EXISTS (SELECT 1 FROM prior) AND {AREA_OK.format("parent")}
      AND (NOT :own_only OR (child.linked_by = :user_id AND child.in_window))),
unlinked AS (
    UPDATE bags SET parent_id = NULL, status = 'pending', linked_by = NULL, linked_at = NULL, updated_at = now()
    FROM allowed WHERE bags.id = allowed.child_id AND bags.parent_id = allowed.parent_id
    RETURNING bags.id, bags.qr_id, bags.type, bags.status, bags.dispatch_area, bags.created_by, bags.created_at),
released AS (
    UPDATE bags SET child_count = child_count - 1,
                    status = CASE WHEN child_count - 1 = 0 THEN 'pending' ELSE 'in_progress' END, updated_at = now()
    WHERE id = (SELECT parent_id FROM allowed) AND EXISTS (SELECT 1 FROM unlinked)
    RETURNING child_count, status),
scan AS (
    INSERT INTO scans (kind, parent_qr, child_qr, dispatch_area, user_id, username, repeat, created_at)
    SELECT 'unlink', :parent_qr, :child_qr, dispatch_area, :user_id, :username, false, now()
    FROM parent WHERE EXISTS (SELECT 1 FROM released))""",
    facts=f"""'parent', (SELECT row_to_json(parent) FROM parent), 'child', (SELECT row_to_json(child) FROM child),
              'unlinked', (SELECT row_to_json(unlinked) FROM unlinked),
              'released', (SELECT row_to_json(released) FROM released), 'children', {CHILDREN.format("parent")}""",
    written="EXISTS (SELECT 1 FROM released)")


async def parent_scan(work: UnitOfWork, *, qr: str, capacity: int, new_area: str | None, area: str | None,
                      user_id: int, username: str) -> dict | None:
    """Select (or create, in `new_area`) a parent and write a scan row. None: the facts are a replay."""
    params = dict(qr=qr, capacity=capacity, new_area=new_area, area=area, user_id=user_id, username=username)
    if work.one_statement:
        return await _one_statement(work, PARENT_SCAN, params)
    found = await _bag(work, bags.c.qr_id == qr, bags.c.type == "parent")
    facts = {"found": found, "created": None, "children": await _children(work, found)}
    if found is None and new_area is not None:
        now = utcnow()
        facts["created"] = await _insert_bag(work, dict(
            qr_id=qr, type="parent", status="pending", dispatch_area=new_area, capacity=capacity, child_count=0,
            created_by=username, created_at=now, updated_at=now))
    selected = facts["created"] or (found if found and area in (None, found["dispatch_area"]) else None)
    if selected is not None:
        await _scan(work, "parent", qr, None, selected["dispatch_area"], user_id, username, repeat=found is not None)
    return facts


async def child_scan(work: UnitOfWork, *, parent_qr: str, child_qr: str, area: str | None, user_id: int,
                     username: str) -> dict | None:
    """Link a child (created if new) to a parent with room, counting it, with a scan row; a repeat on the same
    parent writes only its scan row. With an `area`, only to a parent in it, and only a child in it (or new):
    the facts' child carries its dispatch_area, from which the caller tells that refusal. None: a replay."""
    params = dict(parent_qr=parent_qr, child_qr=child_qr, area=area, user_id=user_id, username=username)
    if work.one_statement:
        return await _one_statement(work, CHILD_SCAN, params)
    parent = await _bag(work, bags.c.qr_id == parent_qr, bags.c.type == "parent")
    child = await _child(work, child_qr)
    facts = {"parent": parent, "child": child, "linked": None, "created": False, "claimed": None,
             "children": await _children(work, parent)}
    if parent is None or area not in (None, parent["dispatch_area"]):
        return facts
    if child is not None and child["parent_id"] == parent["id"]:
        await _scan(work, "child", parent_qr, child_qr, parent["dispatch_area"], user_id, username, repeat=True)
        return facts
    if child is not None and (child["parent_id"] is not None or area not in (None, child["dispatch_area"])):
        return facts
    if parent["child_count"] >= parent["capacity"]:
        return facts
    now = utcnow()
    link = dict(parent_id=parent["id"], dispatch_area=parent["dispatch_area"], status="completed",
                linked_by=user_id, linked_at=now, updated_at=now)
    if child is None:
        facts["linked"] = await _insert_bag(work, dict(
            qr_id=child_qr, type="child", child_count=0, created_by=username, created_at=now, **link))
        facts["created"] = True
    else:
        await work.execute(update(bags).where(bags.c.id == child["id"], bags.c.parent_id.is_(None)).values(**link))
        facts["linked"] = {**child, "status": "completed", "dispatch_area": parent["dispatch_area"]}
    claimed = await work.row(
        update(bags).where(bags.c.id == parent["id"], bags.c.child_count < bags.c.capacity)
        .values(child_count=bags.c.child_count + 1, updated_at=now,
                status=case((bags.c.child_count + 1 >= bags.c.capacity, "completed"), else_="in_progress"))
        .returning(bags.c.child_count, bags.c.status))
    facts["claimed"] = dict(claimed)
    await _scan(work, "child", parent_qr, child_qr, parent["dispatch_area"], user_id, username, repeat=False)
    return facts


async def unlink(work: UnitOfWork, *, parent_qr: str, child_qr: str, area: str | None, own_only: bool,
                 window: int, user_id: int, username: str) -> dict | None:
    """Take a child off its parent (a dispatcher: only their own link, within `window` seconds), with a scan
    row. None: the facts are a replay."""
    params = dict(parent_qr=parent_qr, child_qr=child_qr, area=area, own_only=own_only, window=float(window),
                  user_id=user_id, username=username)
    if work.one_statement:
        return await _one_statement(work, UNLINK, params)
    parent = await _bag(work, bags.c.qr_id == parent_qr)
    row = await work.row(select(*(bags.c[c] for c in BAG_COLUMNS), bags.c.parent_id, bags.c.linked_by,
                                bags.c.linked_at).where(bags.c.qr_id == child_qr))
    child = None
    if row is not None:
        child = _jsonable(row)
        linked_at = as_utc(row["linked_at"])
        child["in_window"] = linked_at is not None and linked_at >= utcnow() - timedelta(seconds=window)
        del child["linked_at"]
    facts = {"parent": parent, "child": child, "unlinked": None, "released": None,
             "children": await _children(work, parent)}
    if (parent is None or child is None or child["parent_id"] != parent["id"]
            or area not in (None, parent["dispatch_area"])
            or (own_only and not (child["linked_by"] == user_id and child["in_window"]))):
        return facts
    now = utcnow()
    await work.execute(update(bags).where(bags.c.id == child["id"]).values(
        parent_id=None, status="pending", linked_by=None, linked_at=None, updated_at=now))
    released = await work.row(
        update(bags).where(bags.c.id == parent["id"])
        .values(child_count=bags.c.child_count - 1, updated_at=now,
                status=case((bags.c.child_count - 1 == 0, "pending"), else_="in_progress"))
        .returning(bags.c.child_count, bags.c.status))
    facts["unlinked"] = {**child, "status": "pending"}
    facts["released"] = dict(released)
    await _scan(work, "unlink", parent_qr, child_qr, parent["dispatch_area"], user_id, username, repeat=False)
    return facts


# --- PostgreSQL: one statement ------------------------------------------------------------------------------

async def _one_statement(work: UnitOfWork, statement, params: dict[str, Any]) -> dict | None:
    try:
        row = await work.row(statement, {**params, **work.idempotency_params()})
    except IntegrityError as exc:
        if on_idempotency_key(exc):
            raise  # the same key written at this moment by a twin request: the unit of work replays it
        raise LostRace from exc  # a concurrent write got in after our snapshot (capacity, a deleted parent)
    if work.replay(row["prior_fingerprint"], row["prior_response"]) is not None:
        return None
    return json.loads(row["facts"])


# --- SQLite: the same steps, one short transaction -----------------------------------------------------------

def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as the facts carry it: datetimes as ISO text in UTC, like PostgreSQL's row_to_json."""
    return {k: (as_utc(v).isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


async def _bag(work: UnitOfWork, *where) -> dict | None:
    row = await work.row(select(*(bags.c[c] for c in BAG_COLUMNS)).where(*where))
    return None if row is None else _jsonable(row)


async def _child(work: UnitOfWork, qr: str) -> dict | None:
    parent = bags.alias("parent")
    row = await work.row(
        select(*(bags.c[c] for c in ("id", "qr_id", "type", "status", "dispatch_area", "parent_id")),
               parent.c.qr_id.label("parent_qr"), bags.c.created_by, bags.c.created_at)
        .outerjoin(parent, parent.c.id == bags.c.parent_id).where(bags.c.qr_id == qr))
    return None if row is None else _jsonable(row)


async def _children(work: UnitOfWork, parent: dict | None) -> list[str]:
    if parent is None:
        return []
    rows = await work.rows(select(bags.c.qr_id).where(bags.c.parent_id == parent["id"]).order_by(bags.c.id))
    return [row["qr_id"] for row in rows]


async def _insert_bag(work: UnitOfWork, values: dict[str, Any]) -> dict:
    return _jsonable(await work.row(insert(bags).values(**values).returning(*(bags.c[c] for c in BAG_COLUMNS))))


async def _scan(work: UnitOfWork, kind: str, parent_qr: str, child_qr: str | None, area: str, user_id: int,
                username: str, *, repeat: bool) -> None:
    await work.execute(insert(scans).values(kind=kind, parent_qr=parent_qr, child_qr=child_qr, dispatch_area=area,
                                            user_id=user_id, username=username, repeat=repeat, created_at=utcnow()))
