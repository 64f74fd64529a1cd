"""Counts a service keeps of its own rows — by state, per local day, per minute — current at every write, cheap to
read, and with no row that every writer must lock.

    TALLY = Tally(counted=(Counted("scans", (Term("'scans'", area="{r}.dispatch_area", at="{r}.created_at"),)),),
                  per_minute=frozenset({"scans"}))

- **The database counts.** Triggers on each counted table append what a write changed to `tally_deltas`: each
  `Term` says, in SQL over a row `{r}`, which metric (and area) the row adds `n` to, and — with `at` — at which
  minute. An UPDATE adds the new row's terms and takes the old row's away (only what changed survives the sum).
  PostgreSQL: INSERT and DELETE triggers per statement, reading its transition table, so a COPY of 100,000 rows
  adds one aggregated INSERT; UPDATE triggers per row (see _ddl); SQLite: row triggers. No write path can forget
  a count, and a write only ever inserts rows of its own: there is no counter row to wait for.
- **A vacuum every 10 s** (PostgreSQL) keeps the queue a few pages long whatever autovacuum does.
- **A fold moves deltas into totals.** `fold` (a background job of every replica, every second) takes a bounded
  batch, deletes it and adds it to `tally_totals` (all time), `tally_days` (the warehouse's local days) and,
  for the `per_minute` metrics, `tally_minutes` — in one transaction. On PostgreSQL the batch is claimed
  `FOR UPDATE SKIP LOCKED`: replicas folding at once take disjoint batches (never counted twice, never waiting
  on each other) and add to the totals in one key order (no deadlock between them). Nothing is held between
  transactions — no session advisory lock, no temporary table, no SET — so it works through pgbouncer in
  transaction mode.
- **A read is totals plus the unfolded tail, in one statement.** One snapshot sees every delta exactly once —
  still queued or already folded — so a count is exact the moment the write commits, not a fold later.
- **Local days.** Deltas carry UTC epoch minutes; the fold (and the tail, when read) place a minute on its local
  day of `BAGTRACK_TIMEZONE` with zoneinfo, as `shared.timeutil.local_day` bounds days everywhere else. Changing
  BAGTRACK_TIMEZONE means running `recount` once (`python -m shared.tally recount <service>`).
- **Recount** rebuilds everything set-based from the counted tables (migrations' backfill, after a bulk load, or
  an operator's check): one GROUP BY per term, days from quarter-hour groups (every zone's offset is a whole
  number of quarter hours, so a quarter hour lies within one local day).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import (BigInteger, Column, Connection, Date, Integer, MetaData, Select, String, Table, bindparam, cast,
                        create_engine, delete, func, insert, literal_column, null, pool, select, text, union_all)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from shared.app import Job
from shared.cache import Cache
from shared.db import Conn, Database
from shared.migrate import upgrade
from shared.timeutil import utcnow
from shared.unit_of_work import UnitOfWork, run_write, write_in_batches

FOLD_EVERY = 1.0  # seconds between a replica's folds
VACUUM_EVERY = 10.0  # seconds: the queue's dead rows are gone before they are many pages
FOLD_BATCH = 5000  # deltas per fold transaction: a backlog is worked off in short transactions
KEEP_MINUTES = 2 * 24 * 60  # per-minute counts are kept two days (enough for "the last hour", and to look back)
QUARTER = 900  # seconds: recount's grouping for days (no zone's day starts off a quarter hour)

_BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite only auto-increments an INTEGER PRIMARY KEY


def _keys(*time: Column) -> list[Column]:
    return [*time, Column("metric", String(32), primary_key=True), Column("area", String(64), primary_key=True),
            Column("n", BigInteger, nullable=False)]


# Each table's columns, made afresh for each use (the Table objects below, and each migration's create_table).
# Days and minutes are keyed time first: reads ask for a range of days (or minutes) of every metric.
_COLUMNS = {
    "tally_deltas": lambda: [Column("id", _BigId, primary_key=True, autoincrement=True),
                             Column("metric", String(32), nullable=False),
                             Column("area", String(64), nullable=False),
                             Column("minute", BigInteger, nullable=True),  # UTC epoch minute; NULL: a state
                             Column("n", BigInteger, nullable=False)],
    "tally_totals": lambda: _keys(),
    "tally_days": lambda: _keys(Column("day", Date, primary_key=True)),
    "tally_minutes": lambda: _keys(Column("minute", BigInteger, primary_key=True)),
}
_metadata = MetaData()
DELTAS, TOTALS, DAYS, MINUTES = TABLES = tuple(Table(name, _metadata, *columns()) for name, columns in _COLUMNS.items())
EVENTS = ("insert", "update", "delete")
TRANSITIONS = {"insert": " REFERENCING NEW TABLE AS new_rows", "delete": " REFERENCING OLD TABLE AS old_rows"}


def create_tables(op) -> None:
    """The tally's tables, for a service's migration (`op` is alembic's)."""
    for table in TABLES:
        op.create_table(table.name, *_COLUMNS[table.name]())
    if op.get_bind().dialect.name == "postgresql":
        # A queue: rows live about a second. Vacuumed after every few thousand deleted rows rather than a share
        # of a table that is nearly always empty, so the tail each read scans stays a few pages.
        op.execute("ALTER TABLE tally_deltas SET (autovacuum_vacuum_scale_factor = 0, "
                   "autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_insert_scale_factor = 0, "
                   "autovacuum_vacuum_insert_threshold = 5000)")


def drop_tables(op) -> None:
    for table in reversed(TABLES):
        op.drop_table(table.name)


def minute_of(moment: datetime) -> int:
    """UTC minutes since 1970 of a moment: the deltas' time bucket."""
    return int(moment.timestamp() // 60)


@lru_cache(maxsize=65536)
def local_day_of(zone: ZoneInfo, minute: int) -> date:
    """The local day of `zone` a UTC epoch minute falls on."""
    return datetime.fromtimestamp(minute * 60, UTC).astimezone(zone).date()


def _bucket(at: str, dialect: str, seconds: int) -> str:
    """SQL: the UTC epoch bucket (of `seconds`) of a timestamp expression."""
    if dialect == "postgresql":
        return f"CAST(floor(extract(epoch FROM {at}) / {seconds}) AS bigint)"
    return f"(CAST(strftime('%s', {at}) AS INTEGER) / {seconds})"


@dataclass(frozen=True)
class Term:
    """What one row adds to one count, in SQL over the row `{r}`: `n` to `metric` of `area` when `when` holds;
    with `at` (a timestamp column), at that moment's minute (a row whose `at` is NULL adds nothing)."""

    metric: str
    when: str | None = None
    area: str = "''"
    at: str | None = None
    n: str = "1"

    def counts(self, row: str) -> list[str]:
        """SQL conditions: this term counts the row `row`."""
        return ([self.when.format(r=row)] if self.when else []) + ([f"{self.at.format(r=row)} IS NOT NULL"]
                                                                    if self.at else [])

    def select(self, row: str, dialect: str, *, negate: bool = False, seconds: int = 60, source: str = "",
               from_bucket: int | None = None) -> str:
        """SQL: this term's (metric, area, minute, n) for the row(s) `row` (NEW, OLD, or an alias in `source`)."""
        bucket = _bucket(self.at.format(r=row), dialect, seconds) if self.at else "CAST(NULL AS bigint)"
        where = self.counts(row) + ([f"{bucket} >= {int(from_bucket)}"] if from_bucket is not None else [])
        n = self.n.format(r=row)
        return (f"SELECT {self.metric.format(r=row)} AS metric, {self.area.format(r=row)} AS area, {bucket} AS minute, "
                f"{f'-({n})' if negate else n} AS n{source}" + (f" WHERE {' AND '.join(where)}" if where else ""))


@dataclass(frozen=True)
class Counted:
    """A counted table and the terms each of its rows adds."""

    table: str
    terms: tuple[Term, ...]


def _summed(selects: Iterable[str]) -> str:
    return ("SELECT metric, area, minute, sum(n) AS n FROM (" + " UNION ALL ".join(selects)
            + ") AS c GROUP BY metric, area, minute")


def _delta_insert(selects: Iterable[str]) -> str:
    """SQL: append the (non-zero) sums of these terms to the deltas."""
    return f"INSERT INTO tally_deltas (metric, area, minute, n) {_summed(selects)} HAVING sum(n) <> 0"


def _per_area() -> defaultdict:
    return defaultdict(Counter)


@dataclass
class Counts:
    """What a read found, by metric then area: all-time totals, per local day, and the `per_minute` metrics since
    a moment."""

    totals: defaultdict = field(default_factory=_per_area)  # metric -> area -> n
    days: defaultdict = field(default_factory=lambda: defaultdict(_per_area))  # metric -> area -> day -> n
    recent: defaultdict = field(default_factory=_per_area)  # metric -> area -> n

    def total(self, metric: str, area: str | None = None) -> int:
        return _one_or_all(self.totals.get(metric, {}), area)

    def recently(self, metric: str, area: str | None = None) -> int:
        return _one_or_all(self.recent.get(metric, {}), area)

    def daily(self, metric: str, area: str | None = None) -> Counter:
        """day -> n of one metric (of one area, or all)."""
        per_area = self.days.get(metric, {})
        if area is not None:
            return Counter(per_area.get(area, {}))
        return sum(per_area.values(), Counter())

    def areas(self, metrics: Iterable[str]) -> list[str]:
        """The areas with a non-zero total of any of `metrics`, sorted."""
        return sorted({a for m in metrics for a, n in self.totals.get(m, {}).items() if n})


def _one_or_all(per_area: dict[str, int], area: str | None) -> int:
    return sum(per_area.values()) if area is None else per_area.get(area, 0)


@dataclass(frozen=True)
class Tally:
    """A service's counted tables and which timed metrics are also kept per minute."""

    counted: tuple[Counted, ...]
    per_minute: frozenset[str] = frozenset()
    keep_minutes: int = KEEP_MINUTES

    # --- schema: migrations ----------------------------------------------------------------------------------

    def install(self, conn: Connection) -> None:
        """Create (or replace) the triggers that write the deltas, from the terms as they are now. A change of
        terms is a new migration calling install() and recount(). On SQLite, a batch migration that rebuilds a
        counted table drops its triggers: install() again after it."""
        for statement in self._ddl(conn.dialect.name):
            conn.exec_driver_sql(statement)

    def uninstall(self, conn: Connection) -> None:
        pg = conn.dialect.name == "postgresql"
        for counted in self.counted:
            for event in EVENTS:
                name = f"tally_{counted.table}_{event}"
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {counted.table}" if pg else ""))
                if pg:
                    conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}()")

    def _ddl(self, dialect: str) -> list[str]:
        """The triggers. PostgreSQL's INSERT and DELETE triggers run per statement, over its transition table, so a
        bulk load queues one delta per count and minute; its UPDATE trigger runs per row. Measured per child scan
        (docs/aggregates.md): a statement-level UPDATE trigger added ~130 µs, a row trigger with a WHEN clause
        comparing every term's values ~330 µs (the server rebuilds the WHEN clause's expression for every
        statement), a plain row trigger ~50 µs: most updates change no count (a parent's child_count while it is
        not billed), and its body then inserts nothing."""
        pg = dialect == "postgresql"
        statements = []
        for counted in self.counted:
            terms, table = counted.terms, counted.table
            rows = {"insert": [t.select("r", dialect, source=" FROM new_rows AS r") for t in terms] if pg
                    else [t.select("NEW", dialect) for t in terms],
                    "delete": [t.select("r", dialect, negate=True, source=" FROM old_rows AS r") for t in terms] if pg
                    else [t.select("OLD", dialect, negate=True) for t in terms],
                    "update": [t.select("NEW", dialect) for t in terms]
                    + [t.select("OLD", dialect, negate=True) for t in terms]}
            for event in EVENTS:
                name, body = f"tally_{table}_{event}", _delta_insert(rows[event])
                per_row = event == "update" or not pg
                if pg:
                    transition = "" if per_row else TRANSITIONS[event]
                    statements += [
                        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                        f"BEGIN\n    {body};\n    RETURN NULL;\nEND\n$$",
                        f"DROP TRIGGER IF EXISTS {name} ON {table}",
                        f"CREATE TRIGGER {name} AFTER {event.upper()} ON {table}{transition} "
                        f"FOR EACH {'ROW' if per_row else 'STATEMENT'} EXECUTE FUNCTION {name}()"]
                else:
                    statements += [f"DROP TRIGGER IF EXISTS {name}",
                                   f"CREATE TRIGGER {name} AFTER {event.upper()} ON {table} FOR EACH ROW "
                                   f"BEGIN\n    {body};\nEND"]
        return statements

    # --- recount: set-based, synchronous (migrations, seeding, operators) ----------------------------------

    def recount(self, conn: Connection, zone: ZoneInfo, *, now: datetime | None = None) -> None:
        """Rebuild every count from the counted tables in the caller's transaction, and drop the queued deltas
        (the tables already hold what they say). On PostgreSQL writers of the counted tables wait until it
        commits (SHARE lock; readers do not), so no delta slips between the count and the drop; a fold running
        meanwhile either finished its batch first or finds the queue empty. SQLite: the first DELETE takes
        the database's one write lock."""
        dialect = conn.dialect.name
        if dialect == "postgresql":
            tables = ", ".join(c.table for c in self.counted)
            conn.exec_driver_sql(f"LOCK TABLE {tables} IN SHARE MODE")
        conn.execute(delete(DELTAS))
        since = minute_of(now or utcnow()) - self.keep_minutes
        totals, days, minutes = Counter(), Counter(), Counter()
        for counted in self.counted:
            source = f" FROM {counted.table} AS r"
            quarters = _summed(t.select("r", dialect, seconds=QUARTER, source=source) for t in counted.terms)
            for metric, area, quarter, n in conn.exec_driver_sql(quarters):
                totals[(metric, area)] += int(n)
                if quarter is not None:
                    days[(local_day_of(zone, quarter * (QUARTER // 60)), metric, area)] += int(n)
            fine = [t.select("r", dialect, source=source, from_bucket=since) for t in counted.terms
                    if t.at and _literal_metric(t) in self.per_minute]
            if fine:
                for metric, area, minute, n in conn.exec_driver_sql(_summed(fine)):
                    minutes[(minute, metric, area)] += int(n)
        for table in (TOTALS, DAYS, MINUTES):
            conn.execute(delete(table))
        _insert_all(conn, TOTALS, [dict(metric=m, area=a, n=n) for (m, a), n in sorted(totals.items())])
        _insert_all(conn, DAYS, [dict(day=d, metric=m, area=a, n=n) for (d, m, a), n in sorted(days.items())])
        _insert_all(conn, MINUTES, [dict(minute=t, metric=m, area=a, n=n) for (t, m, a), n in sorted(minutes.items())])

    # --- fold: the background job ------------------------------------------------------------------------

    async def fold(self, db: Database, cache: Cache, zone: ZoneInfo, *, batch: int = FOLD_BATCH) -> int:
        """Move queued deltas into the totals, `batch` per transaction until the queue is short; how many."""
        async def one_batch(work: UnitOfWork) -> int:
            groups, taken = await _take(work, batch)
            await self._add(work, groups, zone)
            return taken

        return await write_in_batches(db, cache, one_batch, batch=batch)

    async def _add(self, work: UnitOfWork, groups: list[tuple[str, str, int | None, int]], zone: ZoneInfo) -> None:
        """Add grouped deltas to the totals, days and minutes, each table in key order (concurrent folds lock
        the rows they share in the same order, so they never deadlock)."""
        oldest = minute_of(utcnow()) - self.keep_minutes
        totals, days, minutes = Counter(), Counter(), Counter()
        for metric, area, minute, n in groups:
            totals[(metric, area)] += n
            if minute is not None:
                days[(local_day_of(zone, minute), metric, area)] += n
                if metric in self.per_minute and minute >= oldest:
                    minutes[(minute, metric, area)] += n
        upsert = pg_insert if work.dialect == "postgresql" else sqlite_insert
        for table, rows in ((TOTALS, [dict(metric=m, area=a, n=n) for (m, a), n in sorted(totals.items()) if n]),
                            (DAYS, [dict(day=d, metric=m, area=a, n=n) for (d, m, a), n in sorted(days.items()) if n]),
                            (MINUTES, [dict(minute=t, metric=m, area=a, n=n)
                                       for (t, m, a), n in sorted(minutes.items()) if n])):
            if rows:
                statement = upsert(table)
                keys = [c.name for c in table.primary_key.columns]
                await work.execute(statement.on_conflict_do_update(
                    index_elements=keys, set_={"n": table.c.n + statement.excluded.n}), rows)

    async def prune(self, db: Database, cache: Cache) -> int:
        """Forget per-minute counts older than keep_minutes; how many rows went."""
        oldest = minute_of(utcnow()) - self.keep_minutes

        async def one_batch(work: UnitOfWork) -> int:
            return await work.execute(delete(MINUTES).where(MINUTES.c.minute < oldest))

        return (await run_write(db, cache, one_batch)).result

    async def vacuum(self, db: Database) -> None:
        """PostgreSQL: VACUUM and ANALYZE the tally's tables, skipping one another replica is vacuuming. Every read
        scans the queue of deltas, so its dead rows must go within seconds, whatever autovacuum does (it may be
        off — this repository's CI server runs without it — or a minute late); ANALYZE keeps the planner on the
        keys of the days and minutes. SQLite reuses freed pages by itself."""
        if db.dialect != "postgresql":
            return
        async with db.one_statement() as conn:
            await conn.execute(text("VACUUM (ANALYZE, SKIP_LOCKED) " + ", ".join(t.name for t in TABLES)))

    def jobs(self) -> list[Job]:
        """The background jobs a service running this tally registers (create_service_app's `jobs`)."""
        async def fold(app) -> None:
            await self.fold(app.state.db, app.state.cache, app.state.settings.zone)

        async def prune(app) -> None:
            await self.prune(app.state.db, app.state.cache)

        async def vacuum(app) -> None:
            await self.vacuum(app.state.db)

        return [Job("fold tallies", every=FOLD_EVERY, run=fold, first_after=FOLD_EVERY),
                Job("vacuum tallies", every=VACUUM_EVERY, run=vacuum),
                Job("prune per-minute tallies", every=3600, run=prune, first_after=60)]

    # --- read --------------------------------------------------------------------------------------------

    async def read(self, conn: Conn, zone: ZoneInfo, *, days: tuple[date, date] | None = None,
                   since: datetime | None = None, area: str | None = None) -> Counts:
        """Totals, the local days `days` (first, last), the per-minute metrics since `since` (to the minute:
        from the start of its minute), of one area or all — folded and queued alike, in one statement."""
        since_minute = None if since is None else minute_of(since)
        statement = read_query(days=days is not None, since=since is not None, area=area is not None)
        params = {**({"first": days[0], "last": days[1]} if days else {}),
                  **({"since": since_minute} if since is not None else {}), **({"area": area} if area else {})}
        counts = Counts()
        for row in await conn.rows(statement, params):
            part, metric, area_, minute, n = row["part"], row["metric"], row["area"], row["minute"], int(row["n"])
            if part == "total":
                counts.totals[metric][area_] += n
            elif part == "day":
                counts.days[metric][area_][row["day"]] += n
            elif part == "recent":
                counts.recent[metric][area_] += n
            else:  # queued: placed as the fold will place it
                counts.totals[metric][area_] += n
                if minute is None:
                    continue
                local = local_day_of(zone, minute)
                if days is not None and days[0] <= local <= days[1]:
                    counts.days[metric][area_][local] += n
                if since_minute is not None and metric in self.per_minute and minute >= since_minute:
                    counts.recent[metric][area_] += n
        return counts


def _literal_metric(term: Term) -> str | None:
    """The metric's name when the term's metric is a quoted constant (per-minute metrics must be)."""
    m = term.metric.strip()
    return m[1:-1] if len(m) > 1 and m[0] == m[-1] == "'" else None


def _insert_all(conn: Connection, table: Table, rows: list[dict[str, Any]], chunk: int = 5000) -> None:
    for i in range(0, len(rows), chunk):
        conn.execute(insert(table), rows[i:i + chunk])


_TAKE_PG = text("""
WITH batch AS (SELECT id FROM tally_deltas ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED),
moved AS (DELETE FROM tally_deltas AS d USING batch WHERE d.id = batch.id RETURNING d.metric, d.area, d.minute, d.n)
SELECT metric, area, minute, sum(n) AS n, count(*) AS taken FROM moved GROUP BY metric, area, minute""")
_TAKE_SQLITE = text("""
SELECT metric, area, minute, sum(n) AS n, count(*) AS taken, max(id) AS last
FROM (SELECT * FROM tally_deltas ORDER BY id LIMIT :batch) GROUP BY metric, area, minute""")


async def _take(work: UnitOfWork, batch: int) -> tuple[list[tuple[str, str, int | None, int]], int]:
    """Claim and delete the oldest `batch` deltas (PostgreSQL: those no other fold holds), grouped; and how many.

    SQLite has one writer at a time (the transaction began IMMEDIATE), so a plain read and delete suffice."""
    if work.dialect == "postgresql":
        rows = await work.rows(_TAKE_PG, {"batch": batch})
    else:
        rows = await work.rows(_TAKE_SQLITE, {"batch": batch})
        if rows:
            await work.execute(delete(DELTAS).where(DELTAS.c.id <= max(r["last"] for r in rows)))
    groups = [(r["metric"], r["area"], r["minute"], int(r["n"])) for r in rows]
    return groups, sum(int(r["taken"]) for r in rows)


@lru_cache(maxsize=8)
def read_query(*, days: bool, since: bool, area: bool) -> Select:
    """The one statement of a read — folded totals, (with `days`) the days from :first to :last, (with `since`)
    the per-minute metrics from minute :since, the queued deltas, each tagged by `part`; of area :area with
    `area`. Built once per shape."""
    no_day, no_minute = cast(null(), Date).label("day"), cast(null(), BigInteger).label("minute")

    def part(name: str):
        return literal_column(f"'{name}'").label("part")

    def scoped(query, table):
        return query.where(table.c.area == bindparam("area", type_=String)) if area else query

    parts = [scoped(select(part("total"), TOTALS.c.metric, TOTALS.c.area, no_day, no_minute, TOTALS.c.n), TOTALS)]
    if days:
        parts.append(scoped(select(part("day"), DAYS.c.metric, DAYS.c.area, DAYS.c.day, no_minute, DAYS.c.n)
                            .where(DAYS.c.day >= bindparam("first", type_=Date),
                                   DAYS.c.day <= bindparam("last", type_=Date)), DAYS))
    if since:
        parts.append(scoped(select(part("recent"), MINUTES.c.metric, MINUTES.c.area, no_day, no_minute,
                                   cast(func.sum(MINUTES.c.n), BigInteger).label("n"))
                            .where(MINUTES.c.minute >= bindparam("since", type_=BigInteger))
                            .group_by(MINUTES.c.metric, MINUTES.c.area), MINUTES))
    parts.append(scoped(select(part("tail"), DELTAS.c.metric, DELTAS.c.area, no_day, DELTAS.c.minute,
                               cast(func.sum(DELTAS.c.n), BigInteger).label("n"))
                        .group_by(DELTAS.c.metric, DELTAS.c.area, DELTAS.c.minute), DELTAS))
    both = union_all(*parts).subquery("counts")
    return select(both.c.part, both.c.metric, both.c.area, both.c.day, both.c.minute, both.c.n)


def main(argv: list[str] | None = None) -> int:
    """`python -m shared.tally recount <service>`: rebuild a service's counts from its tables (see recount)."""
    parser = argparse.ArgumentParser(prog="python -m shared.tally", description=main.__doc__)
    parser.add_argument("command", choices=["recount"])
    parser.add_argument("service", help="a service whose models define TALLY (scanning, billing)")
    args = parser.parse_args(argv)
    try:
        tally: Tally = importlib.import_module(f"services.{args.service}.models").TALLY
    except (ModuleNotFoundError, AttributeError):
        print(f"service {args.service!r} keeps no tally", file=sys.stderr)
        return 2
    settings = importlib.import_module(f"services.{args.service}.config").Settings()
    upgrade(args.service, settings.database_url)  # the tally's tables and triggers exist from its migration on
    engine = create_engine(settings.database_url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            tally.recount(conn, settings.zone)
    finally:
        engine.dispose()
    print(f"recounted {args.service}'s tallies ({settings.timezone} days)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
