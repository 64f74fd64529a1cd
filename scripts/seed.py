"""Bulk-load a realistic scanning database: parents, their children, one scan row per scan.

    python -m scripts.seed --bags 1800000 [--areas lucknow,indore] [--days 90]
    make seed BAGS=1800000

Shape: one parent per ~23.5 bags (2 of 3 `SB#####` holding 30, 1 of 3 `M444-#####` holding 15); 88% of
parents full (completed), 8% partly filled (in_progress), 4% empty (pending); children `CB########` linked
to them; every bag was scanned once by its area's dispatcher (`disp_<area>`), so there is one scan row per
bag. Parents are spread evenly over the areas and over the last `--days` days, ids ascend with time.

PostgreSQL: COPY in chunks inside one transaction (a failure leaves nothing behind), explicit ids, then the
identity sequences are moved past them and the tables are vacuumed and analysed. SQLite: batched inserts. Then
the dashboard's counts (shared.tally) are recounted from the loaded tables.
The bag table must be empty unless --force-append is given (append continues every numbering).
"""
from __future__ import annotations

import argparse
import csv
import io
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

from sqlalchemy import Engine, create_engine, insert, pool, text
from sqlalchemy.engine import make_url

from services.scanning.config import Settings
from services.scanning.models import TALLY, Bag, Scan
from services.scanning.qr import classify
from shared.migrate import upgrade
from shared.settings import with_psycopg2_driver

BAGS_PER_PARENT = 23.5  # what the shares below give: 1 + 0.88 × 25 + 0.08 × ~6.3
FULL_SHARE, PARTIAL_SHARE = 0.88, 0.08  # the rest (4%) are parents scanned but still empty
PARENT_PREFIXES = ("SB", "M444-")  # 2 of 3 parents are SB
PARENT_NUMBERS = 100_000  # five digits each
CHILD_PREFIX, CHILD_DIGITS = "CB", 8
FIRST_USER_ID = 1000  # synthetic dispatcher ids: FIRST_USER_ID + the area's position in the settings

BAG_COLUMNS = ("id", "qr_id", "type", "status", "dispatch_area", "capacity", "child_count", "parent_id",
               "linked_by", "linked_at", "created_by", "created_at", "updated_at")
SCAN_COLUMNS = ("id", "kind", "parent_qr", "child_qr", "dispatch_area", "user_id", "username", "repeat",
                "created_at")


class SeedRefused(Exception):
    """The seed would break the database or its own rules; nothing was written."""


@dataclass
class SeedReport:
    backend: str
    bags: int = 0
    parents: int = 0
    children: int = 0
    scans: int = 0
    parents_by_status: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0
    analyze_seconds: float = 0.0
    seconds: float = 0.0

    def summary(self) -> str:
        statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(self.parents_by_status.items()))
        return (f"seeded {self.bags:,} bags ({self.parents:,} parents: {statuses}; {self.children:,} children) "
                f"and {self.scans:,} scans on {self.backend} in {self.seconds:.1f} s "
                f"(load {self.load_seconds:.1f} s, vacuum/analyze {self.analyze_seconds:.1f} s)")


@dataclass
class Start:
    """Where every numbering continues: 0/1 on an empty database, past the existing rows when appending."""

    bag_id: int = 1
    scan_id: int = 1
    child_no: int = 1
    parent_no: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARENT_PREFIXES, 0))


@dataclass(frozen=True)
class PlannedParent:
    qr: str
    capacity: int
    children: int
    area: str
    created_at: datetime
    seconds_per_child: float

    @property
    def status(self) -> str:
        return "completed" if self.children == self.capacity else "in_progress" if self.children else "pending"


def capacities(settings: Settings) -> dict[str, int]:
    """Capacity of each parent prefix under the configured formats (and proof that our QRs are valid)."""
    found = {}
    for prefix in PARENT_PREFIXES:
        kind = classify(f"{prefix}{0:05d}", settings)
        if kind is None or not kind.is_parent:
            raise SeedRefused(f"{prefix}##### is not a parent format under SCANNING_PARENT_FORMATS")
        found[prefix] = kind.capacity
    kind = classify(f"{CHILD_PREFIX}{0:0{CHILD_DIGITS}d}", settings)
    if kind is None or kind.is_parent:
        raise SeedRefused(f"{CHILD_PREFIX}{'#' * CHILD_DIGITS} is not a child QR under SCANNING_CHILD_PATTERN")
    return found


def plan_parents(bags: int, *, areas: tuple[str, ...], days: float, now: datetime, rng: random.Random,
                 start: Start, capacity: dict[str, int]) -> list[PlannedParent]:
    """The parents to create and how many children each gets, adding up to exactly `bags` bags."""
    shapes: list[tuple[str, int, int]] = []
    used = dict(start.parent_no)
    remaining = bags
    while remaining > 0:
        preferred = PARENT_PREFIXES[1] if len(shapes) % 3 == 2 else PARENT_PREFIXES[0]
        prefix = next((p for p in (preferred, *PARENT_PREFIXES) if used[p] < PARENT_NUMBERS), None)
        if prefix is None:
            raise SeedRefused(
                f"{bags:,} bags need about {round(bags / BAGS_PER_PARENT):,} parents, but only "
                f"{PARENT_NUMBERS * len(PARENT_PREFIXES) - sum(start.parent_no.values()):,} parent numbers are free "
                f"(SB00000-SB99999 and M444-00000-M444-99999); seed at most ~4,700,000 bags into an empty database")
        number, used[prefix] = used[prefix], used[prefix] + 1
        cap, roll = capacity[prefix], rng.random()
        children = cap if roll < FULL_SHARE else rng.randint(1, max(1, cap // 2)) if roll < FULL_SHARE + PARTIAL_SHARE else 0
        children = min(children, remaining - 1)
        shapes.append((f"{prefix}{number:05d}", cap, children))
        remaining -= 1 + children
    # Creation times spread evenly over the window, ascending like the ids; the last hour is left for
    # the children (a parent's children are scanned a few seconds apart right after it).
    span = max(days * 86_400 - 3_600, 1.0)
    offsets = sorted(rng.random() * span for _ in shapes)
    oldest = now - timedelta(days=days)
    return [PlannedParent(qr, cap, children, rng.choice(areas), oldest + timedelta(seconds=offset),
                          rng.uniform(3.0, 10.0))
            for (qr, cap, children), offset in zip(shapes, offsets)]


def generate_rows(plan: list[PlannedParent], start: Start, user_ids: dict[str, int]) -> Iterator[tuple[tuple, tuple]]:
    """(bag row, scan row) per bag in id order, as tuples in BAG_COLUMNS / SCAN_COLUMNS order."""
    bag_id, scan_id, child_no = start.bag_id, start.scan_id, start.child_no
    for parent in plan:
        user, user_id = f"disp_{parent.area}", user_ids[parent.area]
        step = timedelta(seconds=parent.seconds_per_child)
        last_touch = parent.created_at + step * parent.children
        parent_id = bag_id
        yield ((bag_id, parent.qr, "parent", parent.status, parent.area, parent.capacity, parent.children, None, None,
                None, user, parent.created_at, last_touch),
               (scan_id, "parent", parent.qr, None, parent.area, user_id, user, False, parent.created_at))
        bag_id, scan_id = bag_id + 1, scan_id + 1
        for k in range(1, parent.children + 1):
            qr, at = f"{CHILD_PREFIX}{child_no:0{CHILD_DIGITS}d}", parent.created_at + step * k
            yield ((bag_id, qr, "child", "completed", parent.area, None, 0, parent_id, user_id, at, user, at, at),
                   (scan_id, "child", parent.qr, qr, parent.area, user_id, user, False, at))
            bag_id, scan_id, child_no = bag_id + 1, scan_id + 1, child_no + 1


def seed(target: Engine | str, *, bags: int, areas: tuple[str, ...] | list[str] | None = None, days: float = 90,
         now: datetime | None = None, random_seed: int = 42, append: bool = False, chunk_rows: int = 100_000,
         progress: Callable[[str], None] | None = None, settings: Settings | None = None) -> SeedReport:
    """Load `bags` bags (and a scan row for each) into an empty scanning database, or append with `append`."""
    if bags < 1:
        raise SeedRefused("--bags must be at least 1")
    if days <= 0:
        raise SeedRefused("--days must be positive")
    settings = settings or Settings()
    areas = tuple(a.strip().lower() for a in (areas or settings.areas) if a.strip())
    unknown = sorted(set(areas) - set(settings.areas))
    if not areas or unknown:
        raise SeedRefused(f"unknown areas {unknown or areas}; configured areas: {', '.join(settings.areas)}")
    capacity = capacities(settings)
    now = now or datetime.now(timezone.utc)
    user_ids = {area: FIRST_USER_ID + i for i, area in enumerate(settings.areas)}
    engine = create_engine(with_psycopg2_driver(target), poolclass=pool.NullPool) if isinstance(target, str) else target
    report = SeedReport(backend=engine.dialect.name)
    began = time.perf_counter()
    try:
        load = _copy_postgres if engine.dialect.name == "postgresql" else _insert_batches

        def planner(start: Start) -> Iterator[tuple[tuple, tuple]]:
            plan = plan_parents(bags, areas=areas, days=days, now=now, rng=random.Random(random_seed), start=start,
                                capacity=capacity)
            report.parents = len(plan)
            report.children = bags - len(plan)
            for p in plan:
                report.parents_by_status[p.status] = report.parents_by_status.get(p.status, 0) + 1
            return generate_rows(plan, start, user_ids)

        report.bags = report.scans = load(engine, planner, bags=bags, append=append, chunk_rows=chunk_rows,
                                          progress=progress or (lambda _: None), began=began)
        with engine.begin() as conn:
            # The load's triggers queued its counts (PostgreSQL: one aggregated delta per COPY chunk and minute;
            # SQLite: a few per row); rebuilt set-based here, the dashboard's reads need not sum them meanwhile.
            TALLY.recount(conn, settings.zone)
        report.load_seconds = time.perf_counter() - began
        _analyze(engine)
        report.seconds = time.perf_counter() - began
        report.analyze_seconds = report.seconds - report.load_seconds
        return report
    finally:
        if isinstance(target, str):
            engine.dispose()


def _progress_line(done: int, total: int, began: float) -> str:
    return f"  {done:>12,} / {total:,} bags ({100 * done / total:5.1f}%)  {time.perf_counter() - began:7.1f} s"


def _copy_postgres(engine: Engine, planner, *, bags: int, append: bool, chunk_rows: int, progress, began) -> int:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        # Writers wait for the load (readers do not), so the ids read below stay the largest ones.
        cur.execute("LOCK TABLE bags, scans IN EXCLUSIVE MODE")

        def scalar(sql: str):
            cur.execute(sql)
            return cur.fetchone()[0]

        start = _start(scalar, "postgresql", append)
        rows = planner(start)
        bag_sql = f"COPY bags ({', '.join(BAG_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
        scan_sql = f"COPY scans ({', '.join(SCAN_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
        done = 0
        while True:
            bag_buf, scan_buf = io.StringIO(), io.StringIO()
            bag_out, scan_out = csv.writer(bag_buf), csv.writer(scan_buf)
            n = 0
            for bag_row, scan_row in rows:
                bag_out.writerow(bag_row)
                scan_out.writerow(scan_row)
                n += 1
                if n == chunk_rows:
                    break
            if not n:
                break
            bag_buf.seek(0)
            scan_buf.seek(0)
            cur.copy_expert(bag_sql, bag_buf)
            cur.copy_expert(scan_sql, scan_buf)
            done += n
            progress(_progress_line(done, bags, began))
        # Explicit ids bypassed the identity sequences: move them past the rows, or the next scan collides.
        for table in ("bags", "scans"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        raw.commit()
        return done
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.close()


def _insert_batches(engine: Engine, planner, *, bags: int, append: bool, chunk_rows: int, progress, began) -> int:
    batch = min(chunk_rows, 5_000)
    with engine.begin() as conn:
        start = _start(lambda sql: conn.execute(text(sql)).scalar(), engine.dialect.name, append)
        rows = planner(start)
        done = 0
        while True:
            chunk = [row for _, row in zip(range(batch), rows)]
            if not chunk:
                break
            conn.execute(insert(Bag.__table__), [dict(zip(BAG_COLUMNS, b)) for b, _ in chunk])
            conn.execute(insert(Scan.__table__), [dict(zip(SCAN_COLUMNS, s)) for _, s in chunk])
            done += len(chunk)
            if done % chunk_rows < batch or done == bags:
                progress(_progress_line(done, bags, began))
        return done


def last_code_number(scalar: Callable[[str], object], dialect: str, prefix: str, digits: int) -> int | None:
    """The largest number N among QRs spelled exactly `prefix` + N (fixed width), or None when there is none."""
    # Only codes of exactly this shape count (a child may be called SB12345X); fixed width sorts like numbers.
    shape = (f"qr_id ~ '^{prefix}[0-9]{{{digits}}}$'" if dialect == "postgresql"
             else f"qr_id GLOB '{prefix}{'[0-9]' * digits}'")
    found = scalar(f"SELECT max(qr_id) FROM bags WHERE qr_id LIKE '{prefix}%' AND {shape}")
    return None if found is None else int(str(found)[len(prefix):])


def _start(scalar: Callable[[str], object], dialect: str, append: bool) -> Start:
    """Refuse a non-empty table unless appending; when appending, continue every numbering past what exists."""
    if not append:
        if scalar("SELECT EXISTS (SELECT 1 FROM bags)"):
            raise SeedRefused("table bags is not empty; seed an empty database, or pass --force-append to add to it")
        # Scans outlive deleted bags, so the scan table may hold rows even when bags is empty.
        return Start(scan_id=int(scalar("SELECT COALESCE(max(id), 0) FROM scans")) + 1)

    def after(prefix: str, digits: int, first: int) -> int:
        last = last_code_number(scalar, dialect, prefix, digits)
        return first if last is None else last + 1

    return Start(
        bag_id=int(scalar("SELECT COALESCE(max(id), 0) FROM bags")) + 1,
        scan_id=int(scalar("SELECT COALESCE(max(id), 0) FROM scans")) + 1,
        child_no=after(CHILD_PREFIX, CHILD_DIGITS, 1),
        parent_no={p: after(p, 5, 0) for p in PARENT_PREFIXES},
    )


def _analyze(engine: Engine) -> None:
    """Fresh statistics for the planner; on PostgreSQL a VACUUM too, so index-only scans need no heap visits."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE) bags, scans"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.seed", description=__doc__.split("\n")[0])
    parser.add_argument("--bags", type=int, default=1_800_000, help="how many bags (parents + children) to add")
    parser.add_argument("--areas", help="comma-separated dispatch areas (default: every configured area)")
    parser.add_argument("--days", type=float, default=90, help="spread creation times over this many past days")
    parser.add_argument("--seed", type=int, default=42, help="random seed (same seed, same data)")
    parser.add_argument("--database-url", help="default: the scanning service's own database from its settings")
    parser.add_argument("--force-append", action="store_true",
                        help="add to a non-empty database, continuing every numbering (no other writer may run)")
    args = parser.parse_args(argv)

    settings = Settings()
    url = with_psycopg2_driver(args.database_url) if args.database_url else settings.database_url
    where = make_url(url).render_as_string(hide_password=True)
    try:
        upgrade("scanning", url)
        print(f"seeding {args.bags:,} bags into {where}", flush=True)
        report = seed(url, bags=args.bags, areas=args.areas.split(",") if args.areas else None, days=args.days,
                      random_seed=args.seed, append=args.force_append, settings=settings,
                      progress=lambda line: print(line, flush=True))
    except SeedRefused as exc:
        print(f"seed refused: {exc}", file=sys.stderr)
        return 2
    print(report.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
