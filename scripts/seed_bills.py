"""Bulk-load realistic bills onto the parents scanning already holds (run `make seed` first).

    python -m scripts.seed_bills --bills 50000 [--days 90] [--fill 0.9] [--seed 42]
    make seed-bills BILLS=50000

Parents: the unbilled ones of scanning's database (`bill_id IS NULL`), completed ones first, then partly filled
ones (never empty ones); at most `--fill` (default 90%) of them are used, so some stay free to load by hand.
Shape: ~0.5% "truck" bills of capacity 25-35 (the bills with ~30 parents a read benchmark wants); the others'
capacities follow an exponential tail from 1 up to 60, its mean as large as the parents allow (with plenty of
parents capacities run 5-60; with 1.8 M bags, ~76,000 parents, 50,000 bills are mostly 1-2 parents). Older bills
are nearly all completed and full (93%, 5% processing and partly filled, 2% new and empty); those of the last
three days are still being worked (50% / 35% / 15%). Bills are created within working hours (07:00-21:00) of
the warehouse's days (BAGTRACK_TIMEZONE) over the last `--days` days, by biller_1..biller_5, never before the
parents they hold were filled; each day's codes run BILL_YYYYMMDD_0001.. in creation order and
bill_day_counters holds each day's last number. Each bill has its history: 'create', one 'add' per parent,
'complete' when completed. Parents are loaded in time order; a bill's counts are as of its last add.

Scanning's marks are set too (bags.bill_id, bill_link = the bill_parents row's id, billed_at = when it was
added), and set FIRST: the marks are committed in scanning's database before the bills are committed in
billing's (the order of billing's own adds: a parent on a bill is always marked); if the bills then fail, the
marks are taken off again.

PostgreSQL: COPY in one transaction per database (a temp table of marks COPY'd in, then one UPDATE ... FROM),
explicit ids past the existing rows and sequences, the sequences moved past them, VACUUM (ANALYZE). SQLite:
batched inserts. Refused (nothing written) if billing already has bills, unless --force-append (which continues
ids and each day's numbering); no other writer should run on either database meanwhile.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, time as dtime, timedelta
from typing import Any, Callable
from zoneinfo import ZoneInfo

from sqlalchemy import DateTime, Engine, bindparam, create_engine, insert, pool, text
from sqlalchemy.engine import make_url

from services.billing.codes import generated_code
from services.billing.config import Settings as BillingSettings
from services.billing.models import Bill, BillEvent, BillParent
from services.scanning.config import Settings as ScanningSettings
from shared.migrate import upgrade
from shared.settings import with_psycopg2_driver

CREATORS = tuple(f"biller_{i}" for i in range(1, 6))
FIRST_USER_ID = 2000  # synthetic biller ids: FIRST_USER_ID + 1..5 (scripts/seed.py uses 1000+ for dispatchers)
MAX_CAPACITY = 60
TRUCK_SHARE, TRUCK_CAPACITY = 0.005, (25, 35)
RECENT_DAYS = 3
STATUS_SHARES = {"old": (0.93, 0.05), "recent": (0.50, 0.35)}  # (completed, processing); the rest are new
WORK_HOURS = (7, 21)
DESTINATIONS = ("Lucknow", "Indore", "Jaipur", "Nagpur", "Patna", "Bhopal", "Surat", "Kanpur", "Pune", "Agra",
                "Vadodara", "Ludhiana", "Nashik", "Raipur", "Ranchi")
STATES = ("UP", "MP", "RJ", "MH", "BR", "GJ", "PB", "CG", "JH", "DL")

BILL_COLUMNS = ("id", "bill_id", "bill_key", "description", "destination", "vehicle_number", "capacity", "status",
                "linked_count", "expected_weight_kg", "actual_weight_kg", "counted_at", "created_by", "created_by_id",
                "created_at", "updated_at", "completed_at")
PARENT_COLUMNS = ("id", "bill_pk", "parent_qr", "state", "capacity", "child_count", "added_by", "added_at")
EVENT_COLUMNS = ("id", "bill_pk", "bill_id", "kind", "parent_qr", "detail", "user_id", "username", "created_at")
MARK_COLUMNS = ("qr_id", "bill_id", "bill_link", "billed_at")


class SeedRefused(Exception):
    """The seed would break a database or its own rules; nothing was written."""


@dataclass(frozen=True)
class Parent:
    qr: str
    capacity: int
    child_count: int
    status: str
    filled_at: datetime  # the parent's updated_at: when its last child went in


@dataclass
class PlannedBill:
    capacity: int
    status: str
    created_at: datetime
    creator: int  # 0..4
    parents: list[Parent] = field(default_factory=list)
    code: str = ""
    description: str | None = None
    destination: str | None = None
    vehicle_number: str | None = None


@dataclass
class BillSeedReport:
    backend: str
    bills: int = 0
    parents_billed: int = 0
    parents_available: int = 0
    events: int = 0
    days: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    capacities: dict[str, int] = field(default_factory=dict)
    marks_seconds: float = 0.0
    bills_seconds: float = 0.0
    analyze_seconds: float = 0.0
    seconds: float = 0.0

    def summary(self) -> str:
        statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(self.by_status.items()))
        caps = ", ".join(f"{k}: {v:,}" for k, v in self.capacities.items())
        return (f"seeded {self.bills:,} bills ({statuses}; capacities {caps}) over {self.days} days holding "
                f"{self.parents_billed:,} of {self.parents_available:,} unbilled parents, {self.events:,} history "
                f"rows, on {self.backend} in {self.seconds:.1f} s (marks {self.marks_seconds:.1f} s, bills "
                f"{self.bills_seconds:.1f} s, vacuum/analyze {self.analyze_seconds:.1f} s)")


# --- the plan -------------------------------------------------------------------------------------------------

def _regular_capacity(u: float, mean_extra: float) -> int:
    return 1 + min(MAX_CAPACITY - 1, int(-mean_extra * math.log(1.0 - u)))


def _loaded(capacity: int, status: str, fill: float) -> int:
    """Parents a bill holds: all for a completed one, none for a new one, 1..capacity-1 for one in progress."""
    if status == "completed":
        return capacity
    if status == "new":
        return 0
    return 1 + int(fill * (capacity - 1))


def plan_bills(bills: int, parents: list[Parent], *, days: float, now: datetime, zone: ZoneInfo, rng: random.Random,
               fill: float = 0.9, day_start: Callable[[str], int] = lambda day: 0) -> list[PlannedBill]:
    """Bills, oldest first, each with its parents and code: they hold at most `fill` of `parents`."""
    if bills < 1:
        raise SeedRefused("--bills must be at least 1")
    if days <= 0 or not 0 < fill <= 1:
        raise SeedRefused("--days must be positive and 0 < --fill <= 1")
    budget = int(len(parents) * fill)
    # Creation instants: a random day of the window, a random working-hours minute of it, local time.
    today = now.astimezone(zone).date()
    span_days = max(1, math.ceil(days))
    latest = now - timedelta(minutes=30)  # room for a bill's adds and completion before now
    windows = []  # each day's working hours, in UTC, cut at `latest` (today's may be short, or not yet begun)
    for back in range(span_days):
        day = today - timedelta(days=back)
        start = datetime.combine(day, dtime(WORK_HOURS[0]), tzinfo=zone).astimezone(UTC)
        end = min(datetime.combine(day, dtime(WORK_HOURS[1]), tzinfo=zone).astimezone(UTC), latest)
        if end > start:
            windows.append((start, (end - start).total_seconds()))
    if not windows:  # a window shorter than one working day that has not begun: any time of it
        windows = [(latest - timedelta(days=days), days * 86_400)]
    full = max(length for _, length in windows)
    instants = []
    while len(instants) < bills:  # a day in proportion to its working seconds (today's are fewer)
        start, length = rng.choice(windows)
        offset = rng.uniform(0, full)
        if offset < length:
            instants.append(start + timedelta(seconds=offset))
    instants.sort()
    # Status by age; the draws below are fixed first, so the capacity search only changes capacities.
    draws = []
    for at in instants:
        completed, processing = STATUS_SHARES["recent" if now - at < timedelta(days=RECENT_DAYS) else "old"]
        roll = rng.random()
        status = "completed" if roll < completed else "processing" if roll < completed + processing else "new"
        truck = rng.random() < TRUCK_SHARE
        draws.append((at, status, truck, rng.randint(*TRUCK_CAPACITY), rng.random(), rng.random()))

    def shape(mean_extra: float, trucks: bool) -> tuple[list[tuple[int, str]], int]:
        out, need = [], 0
        for _, status, truck, truck_cap, u, f in draws:
            cap = truck_cap if truck and trucks else _regular_capacity(u, mean_extra)
            if status == "processing" and cap < 2:
                cap = 2
            out.append((cap, status))
            need += _loaded(cap, status, f)
        return out, need

    trucks = True
    shaped, need = shape(0.0, trucks)
    if need > budget:
        trucks = False
        shaped, need = shape(0.0, trucks)
    if need > budget:
        raise SeedRefused(
            f"{bills:,} bills need at least {need:,} parents, but only {budget:,} of the {len(parents):,} unbilled "
            f"completed or partly filled parents may be used (--fill {fill}); seed more bags (make seed) or fewer bills")
    low, high = 0.0, 12.0  # the mean extra capacity above 1: as large as the parents allow, at most ~13 on average
    if shape(high, trucks)[1] <= budget:
        low = high
    else:
        for _ in range(30):
            mid = (low + high) / 2
            if shape(mid, trucks)[1] <= budget:
                low = mid
            else:
                high = mid
    shaped, need = shape(low, trucks)

    # Which parents: completed ones first (a random choice among them), then partly filled; loaded in time order.
    completed = [p for p in parents if p.status == "completed"]
    partial = [p for p in parents if p.status != "completed"]
    rng.shuffle(completed)
    rng.shuffle(partial)
    chosen = sorted((completed + partial)[:need], key=lambda p: (p.filled_at, p.qr))
    queue = iter(chosen)
    plan: list[PlannedBill] = []
    for (at, _, _, _, _, f), (cap, status) in zip(draws, shaped):
        bill = PlannedBill(capacity=cap, status=status, created_at=at, creator=rng.randrange(len(CREATORS)))
        bill.parents = [next(queue) for _ in range(_loaded(cap, status, f))]
        if bill.parents:  # never billed before the parents were full: the bill comes a little after its last one
            ready = max(p.filled_at for p in bill.parents) + timedelta(minutes=rng.uniform(5, 90))
            bill.created_at = min(max(bill.created_at, ready), latest)
        if rng.random() < 0.8:
            bill.destination = rng.choice(DESTINATIONS)
            bill.description = f"{cap} parent bags for {bill.destination}" if rng.random() < 0.6 else None
        if rng.random() < 0.7:
            bill.vehicle_number = (f"{rng.choice(STATES)}{rng.randint(1, 99):02d}"
                                   f"{chr(65 + rng.randrange(26))}{chr(65 + rng.randrange(26))}{rng.randint(1, 9999):04d}")
        plan.append(bill)
    plan.sort(key=lambda b: b.created_at)
    # Codes per local day, in creation order, continuing after what the day already handed out.
    numbers: dict[str, int] = {}
    for bill in plan:
        local = bill.created_at.astimezone(zone)
        day = f"{local:%Y%m%d}"
        numbers[day] = numbers.get(day, day_start(day)) + 1
        bill.code = generated_code(local.date(), numbers[day])
    return plan


def _stamp(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass
class Rows:
    bills: list[tuple] = field(default_factory=list)
    parents: list[tuple] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)
    marks: list[tuple] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)


def build_rows(plan: list[PlannedBill], *, bill_id: int, parent_id: int, event_id: int, now: datetime,
               rng: random.Random) -> Rows:
    """Rows of every table (in *_COLUMNS order) with explicit ids from the given starts."""
    rows = Rows()
    for bill in plan:
        creator = CREATORS[bill.creator]
        user_id = FIRST_USER_ID + 1 + bill.creator
        at = bill.created_at
        detail = {"capacity": bill.capacity, "description": bill.description, "destination": bill.destination,
                  "vehicle_number": bill.vehicle_number}
        rows.events.append((event_id, bill_id, bill.code, "create", None, json.dumps(detail), user_id, creator, at))
        event_id += 1
        last = at
        for parent in bill.parents:
            last = min(last + timedelta(seconds=rng.uniform(20, 90)), now)
            rows.parents.append((parent_id, bill_id, parent.qr, "active", parent.capacity, parent.child_count,
                                 creator, last))
            rows.marks.append((parent.qr, bill.code, parent_id, last))
            rows.events.append((event_id, bill_id, bill.code, "add", parent.qr,
                                json.dumps({"capacity": parent.capacity, "child_count": parent.child_count}),
                                user_id, creator, last))
            parent_id, event_id = parent_id + 1, event_id + 1
        completed_at = None
        if bill.status == "completed":
            completed_at = min(last + timedelta(seconds=rng.uniform(60, 600)), now)
            rows.events.append((event_id, bill_id, bill.code, "complete", None, None, user_id, creator, completed_at))
            event_id += 1
        rows.bills.append((
            bill_id, bill.code, bill.code.upper(), bill.description, bill.destination, bill.vehicle_number,
            bill.capacity, bill.status, len(bill.parents), sum(p.capacity for p in bill.parents),
            sum(p.child_count for p in bill.parents), last if bill.parents else None, creator, user_id, at,
            completed_at or last, completed_at))
        day = bill.code.split("_")[1]
        rows.counters[day] = max(rows.counters.get(day, 0), int(bill.code.split("_")[2]))
        bill_id += 1
    return rows


# --- the databases ------------------------------------------------------------------------------------------

def _engine(target: Engine | str) -> Engine:
    return create_engine(with_psycopg2_driver(target), poolclass=pool.NullPool) if isinstance(target, str) else target


def _columns(engine: Engine, table: str) -> set[str]:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            found = conn.execute(text("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_schema = current_schema() AND table_name = :t"), {"t": table})
            return {r[0] for r in found}
        return {r[1] for r in conn.execute(text(f"PRAGMA table_info({table})"))}


def unbilled_parents(scanning: Engine, exclude: set[str] = frozenset()) -> list[Parent]:
    """Scanning's parents holding children and on no bill (marked by none), minus those billing holds."""
    with scanning.connect() as conn:
        rows = conn.execute(text(
            "SELECT qr_id, capacity, child_count, status, updated_at FROM bags WHERE type = 'parent' "
            "AND bill_id IS NULL AND status IN ('completed', 'in_progress') AND child_count > 0 ORDER BY id"))
        out = []
        for qr, cap, children, status, updated in rows:
            if qr in exclude:
                continue
            if isinstance(updated, str):
                updated = datetime.fromisoformat(updated)
            if updated.tzinfo is None:
                updated = updated.replace(tzinfo=UTC)
            out.append(Parent(qr, int(cap), int(children), status, updated))
        return out


def _csv(rows: list[tuple]) -> io.StringIO:
    buf = io.StringIO()
    out = csv.writer(buf)
    for row in rows:
        out.writerow(["" if v is None else _stamp(v) for v in row])  # COPY csv: an unquoted empty field is NULL
    buf.seek(0)
    return buf


def _copy(cur, table: str, columns: tuple[str, ...], rows: list[tuple], chunk: int = 100_000) -> None:
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)"
    for i in range(0, len(rows), chunk):
        cur.copy_expert(sql, _csv(rows[i:i + chunk]))


class _Billing:
    """Billing's side on one open transaction: refuse, read the starts, write the rows, commit or roll back."""

    def __init__(self, engine: Engine, append: bool) -> None:
        self.engine, self.append = engine, append
        self.pg = engine.dialect.name == "postgresql"
        if self.pg:
            self.raw = engine.raw_connection()
            self.cur = self.raw.cursor()
            # Writers wait for the seed (readers do not), so the ids read below stay the largest ones.
            self.cur.execute("LOCK TABLE bills, bill_parents, bill_events, bill_day_counters IN EXCLUSIVE MODE")
        else:
            self.conn = engine.connect()
            self.tx = self.conn.begin()

    def scalar(self, sql: str):
        if self.pg:
            self.cur.execute(sql)
            return self.cur.fetchone()[0]
        return self.conn.execute(text(sql)).scalar()

    def rows(self, sql: str) -> list[tuple]:
        if self.pg:
            self.cur.execute(sql)
            return self.cur.fetchall()
        return [tuple(r) for r in self.conn.execute(text(sql))]

    def check_empty(self) -> None:
        if not self.append and self.scalar("SELECT EXISTS (SELECT 1 FROM bills)"):
            raise SeedRefused(f"billing already has {self.scalar('SELECT count(*) FROM bills'):,} bills; seed an "
                              "empty billing database, or pass --force-append to add to it")

    def next_id(self, table: str) -> int:
        """Past the largest id and (PostgreSQL) past every id the sequence ever handed out."""
        top = int(self.scalar(f"SELECT COALESCE(max(id), 0) FROM {table}"))
        if self.pg:
            seq = self.scalar(f"SELECT pg_get_serial_sequence('{table}', 'id')")
            if seq:
                self.cur.execute(f"SELECT last_value, is_called FROM {seq}")
                last, called = self.cur.fetchone()
                top = max(top, int(last) if called else int(last) - 1)
        return top + 1

    def day_starts(self) -> dict[str, int]:
        """Each day's last generated number so far: its counter, or a code already there beyond it."""
        starts = {day: int(last) for day, last in self.rows("SELECT day, last FROM bill_day_counters")}
        for (key,) in self.rows("SELECT bill_key FROM bills WHERE bill_key LIKE 'BILL%'"):
            parts = key.split("_")
            if len(parts) == 3 and parts[0] == "BILL" and len(parts[1]) == 8 and parts[1].isdigit() and parts[2].isdigit():
                starts[parts[1]] = max(starts.get(parts[1], 0), int(parts[2]))
        return starts

    def held(self) -> set[str]:
        return {r[0] for r in self.rows("SELECT parent_qr FROM bill_parents")}

    def write(self, rows: Rows) -> None:
        counters = sorted(rows.counters.items())
        if self.pg:
            _copy(self.cur, "bills", BILL_COLUMNS, rows.bills)
            _copy(self.cur, "bill_parents", PARENT_COLUMNS, rows.parents)
            _copy(self.cur, "bill_events", EVENT_COLUMNS, rows.events)
            self.cur.execute("CREATE TEMP TABLE seed_day_counters (day varchar(8), last integer) ON COMMIT DROP")
            _copy(self.cur, "seed_day_counters", ("day", "last"), counters)
            self.cur.execute("INSERT INTO bill_day_counters (day, last) SELECT day, last FROM seed_day_counters "
                             "ON CONFLICT (day) DO UPDATE SET last = GREATEST(bill_day_counters.last, EXCLUDED.last)")
            for table in ("bills", "bill_parents", "bill_events"):
                self.cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                 f"GREATEST((SELECT max(id) FROM {table}), 1))")
            return
        for table, columns, data in ((Bill.__table__, BILL_COLUMNS, rows.bills),
                                     (BillParent.__table__, PARENT_COLUMNS, rows.parents),
                                     (BillEvent.__table__, EVENT_COLUMNS, rows.events)):
            for i in range(0, len(data), 5_000):
                self.conn.execute(insert(table), [dict(zip(columns, r)) for r in data[i:i + 5_000]])
        for day, last in counters:
            self.conn.execute(text("INSERT INTO bill_day_counters (day, last) VALUES (:d, :l) ON CONFLICT (day) "
                                   "DO UPDATE SET last = max(bill_day_counters.last, excluded.last)"),
                              {"d": day, "l": last})

    def commit(self) -> None:
        (self.raw if self.pg else self.tx).commit()

    def close(self) -> None:
        """Roll back whatever was not committed, and let the connection go."""
        if self.pg:
            self.raw.rollback()
            self.raw.close()
        else:
            if self.tx.is_active:
                self.tx.rollback()
            self.conn.close()


def set_marks(scanning: Engine, marks: list[tuple]) -> None:
    """Mark each parent (qr, bill code, link, billed_at) in one transaction; refused (nothing marked) unless every
    one of them is still an unmarked parent."""
    if scanning.dialect.name == "postgresql":
        raw = scanning.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("CREATE TEMP TABLE seed_bill_marks (qr_id varchar(32) PRIMARY KEY, bill_id varchar(40), "
                        "bill_link bigint, billed_at timestamptz) ON COMMIT DROP")
            _copy(cur, "seed_bill_marks", MARK_COLUMNS, marks)
            cur.execute("ANALYZE seed_bill_marks")
            cur.execute("UPDATE bags SET bill_id = m.bill_id, bill_link = m.bill_link, billed_at = m.billed_at "
                        "FROM seed_bill_marks m WHERE bags.qr_id = m.qr_id AND bags.type = 'parent' "
                        "AND bags.bill_id IS NULL")
            if cur.rowcount != len(marks):
                raise SeedRefused(f"only {cur.rowcount:,} of {len(marks):,} parents could be marked (deleted or "
                                  "billed meanwhile?); nothing was written — stop other writers and retry")
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()
        return
    statement = text("UPDATE bags SET bill_id = :bill_id, bill_link = :bill_link, billed_at = :billed_at "
                     "WHERE qr_id = :qr_id AND type = 'parent' AND bill_id IS NULL").bindparams(
        bindparam("billed_at", type_=DateTime(timezone=True)))
    with scanning.begin() as conn:
        done = 0
        for i in range(0, len(marks), 5_000):
            done += conn.execute(statement, [dict(zip(MARK_COLUMNS, m)) for m in marks[i:i + 5_000]]).rowcount
        if done != len(marks):
            raise SeedRefused(f"only {done:,} of {len(marks):,} parents could be marked (deleted or billed "
                              "meanwhile?); nothing was written — stop other writers and retry")


def clear_marks(scanning: Engine, marks: list[tuple]) -> None:
    """Take this seed's marks off again (the bills could not be written)."""
    statement = text("UPDATE bags SET bill_id = NULL, bill_link = NULL, billed_at = NULL "
                     "WHERE qr_id = :qr_id AND bill_id = :bill_id AND bill_link = :bill_link")
    with scanning.begin() as conn:
        for i in range(0, len(marks), 5_000):
            conn.execute(statement, [dict(zip(("qr_id", "bill_id", "bill_link"), m[:3])) for m in marks[i:i + 5_000]])


def _analyze(billing: Engine, scanning: Engine) -> None:
    for engine, tables in ((billing, "bills, bill_parents, bill_events, bill_day_counters"), (scanning, "bags")):
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f"VACUUM (ANALYZE) {tables}"))
        else:
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))


def seed_bills(billing_target: Engine | str, scanning_target: Engine | str, *, bills: int, days: float = 90,
               fill: float = 0.9, now: datetime | None = None, random_seed: int = 42, append: bool = False,
               timezone: str | None = None, progress: Callable[[str], None] | None = None) -> BillSeedReport:
    """Load `bills` bills onto unbilled parents of scanning's database, with scanning's marks."""
    progress = progress or (lambda _: None)
    zone = ZoneInfo(timezone or BillingSettings().timezone)
    now = now or datetime.now(UTC)
    billing, scanning = _engine(billing_target), _engine(scanning_target)
    report = BillSeedReport(backend=billing.dialect.name)
    began = time.perf_counter()
    try:
        if "bill_link" not in _columns(scanning, "bags"):
            raise SeedRefused("scanning's bags table has no bill_link column: migrate scanning to its latest "
                              "revision (0003 bill marks) first")
        side = _Billing(billing, append)
        try:
            side.check_empty()
            parents = unbilled_parents(scanning, side.held() if append else set())
            report.parents_available = len(parents)
            rng = random.Random(random_seed)
            starts = side.day_starts() if append else {}
            plan = plan_bills(bills, parents, days=days, now=now, zone=zone, rng=rng, fill=fill,
                              day_start=lambda day: starts.get(day, 0))
            rows = build_rows(plan, bill_id=side.next_id("bills"), parent_id=side.next_id("bill_parents"),
                              event_id=side.next_id("bill_events"), now=now, rng=rng)
            marks = rows.marks
            progress(f"  planned {len(rows.bills):,} bills holding {len(rows.parents):,} parents "
                     f"({time.perf_counter() - began:.1f} s)")
            set_marks(scanning, marks)  # first, and committed: a billed parent always carries its mark
            report.marks_seconds = time.perf_counter() - began
            progress(f"  marked {len(marks):,} parents in scanning ({report.marks_seconds:.1f} s)")
            try:
                side.write(rows)
                side.commit()
            except BaseException:
                clear_marks(scanning, marks)
                raise
            report.bills_seconds = time.perf_counter() - began - report.marks_seconds
            progress(f"  wrote {len(rows.bills):,} bills, {len(rows.parents):,} bill parents, {len(rows.events):,} "
                     f"events ({time.perf_counter() - began:.1f} s)")
        finally:
            side.close()  # rolls back unless committed
        loaded_at = time.perf_counter()
        _analyze(billing, scanning)
        report.analyze_seconds = time.perf_counter() - loaded_at
        report.bills, report.parents_billed, report.events = len(rows.bills), len(rows.parents), len(rows.events)
        report.days = len(rows.counters)
        for bill in plan:
            report.by_status[bill.status] = report.by_status.get(bill.status, 0) + 1
        for label, low, high in (("1", 1, 1), ("2-4", 2, 4), ("5-24", 5, 24), ("25-35", 25, 35), ("36-60", 36, 60)):
            report.capacities[label] = sum(1 for b in plan if low <= b.capacity <= high)
        report.seconds = time.perf_counter() - began
        return report
    finally:
        if isinstance(billing_target, str):
            billing.dispose()
        if isinstance(scanning_target, str):
            scanning.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.seed_bills", description=__doc__.split("\n")[0])
    parser.add_argument("--bills", type=int, default=50_000, help="how many bills to add")
    parser.add_argument("--days", type=float, default=90, help="spread creation times over this many past days")
    parser.add_argument("--fill", type=float, default=0.9, help="at most this share of the unbilled parents is used")
    parser.add_argument("--seed", type=int, default=42, help="random seed (same seed and parents, same bills)")
    parser.add_argument("--billing-database-url", help="default: the billing service's own database")
    parser.add_argument("--scanning-database-url", help="default: the scanning service's own database")
    parser.add_argument("--force-append", action="store_true",
                        help="add to a billing database that has bills, continuing ids and each day's codes")
    args = parser.parse_args(argv)

    billing_settings = BillingSettings()
    billing_url = with_psycopg2_driver(args.billing_database_url) if args.billing_database_url \
        else billing_settings.database_url
    scanning_url = with_psycopg2_driver(args.scanning_database_url) if args.scanning_database_url \
        else ScanningSettings().database_url
    where = " and ".join(make_url(u).render_as_string(hide_password=True) for u in (billing_url, scanning_url))
    try:
        upgrade("scanning", scanning_url)
        upgrade("billing", billing_url)
        print(f"seeding {args.bills:,} bills into {where}", flush=True)
        report = seed_bills(billing_url, scanning_url, bills=args.bills, days=args.days, fill=args.fill,
                            random_seed=args.seed, append=args.force_append, timezone=billing_settings.timezone,
                            progress=lambda line: print(line, flush=True))
    except SeedRefused as exc:
        print(f"seed refused: {exc}", file=sys.stderr)
        return 2
    print(report.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
