"""shared.tally on both backends, on a table of its own: counts exact before and after a fold, local days by the
warehouse's zone, recount equal to the fold, and (PostgreSQL) replicas folding at once never counting twice."""
from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import (Column, DateTime, Integer, MetaData, String, Table, create_engine, func, insert, pool, select,
                        text, update)

from services.scanning.config import Settings
from shared import tally
from shared.cache import MemoryCache
from shared.db import Database
from shared.migrate import ensure_database_exists
from shared.tally import DAYS, DELTAS, MINUTES, TOTALS, Counted, Tally, Term, minute_of

ZONE = ZoneInfo("Asia/Kolkata")
ITEMS = Table("tally_items", MetaData(), Column("id", Integer, primary_key=True), Column("kind", String(10)),
              Column("area", String(20)), Column("weight", Integer), Column("at", DateTime(timezone=True)))
TALLY = Tally(counted=(Counted("tally_items", (
    Term("'items_' || {r}.kind", area="{r}.area"),
    Term("'placed'", area="{r}.area", at="{r}.at"),
    Term("'heavy_kg'", when="{r}.kind = 'heavy'", area="{r}.area", at="{r}.at", n="{r}.weight"),
)),), per_minute=frozenset({"placed"}))


@pytest.fixture
def url(backend, tmp_path) -> str:
    """A database holding the items table, the tally's tables and its triggers."""
    url = (f"sqlite:///{tmp_path}/tally.db" if backend.database_url is None
           else Settings(shared_database_url=backend.database_url).database_url.replace("_scanning", "_tally"))
    ensure_database_exists(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        for table in (*tally.TABLES, ITEMS):
            table.drop(conn, checkfirst=True)
        ITEMS.create(conn)
        tally.create_tables(Operations(MigrationContext.configure(conn)))
        TALLY.install(conn)
    engine.dispose()
    return url


def write(url: str, *statements) -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(statement)
    engine.dispose()


def place(*items: tuple[str, str, int, datetime]):
    return insert(ITEMS).values([dict(kind=k, area=a, weight=w, at=at) for k, a, w, at in items])


def scalar(url: str, statement):
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        value = conn.execute(statement).scalar()
    engine.dispose()
    return value


def truth(url: str, first: date, last: date, since: datetime) -> dict:
    """What the counts must be, from the items themselves (days by zoneinfo, one row at a time)."""
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        rows = conn.execute(select(ITEMS)).all()
    engine.dispose()
    found = {"totals": Counter(), "days": Counter(), "recent": Counter()}
    for row in rows:
        at = row.at.replace(tzinfo=UTC) if row.at.tzinfo is None else row.at
        day = at.astimezone(ZONE).date()
        found["totals"][(f"items_{row.kind}", row.area)] += 1
        found["totals"][("placed", row.area)] += 1
        terms = [("placed", 1)] + ([("heavy_kg", row.weight)] if row.kind == "heavy" else [])
        if row.kind == "heavy":
            found["totals"][("heavy_kg", row.area)] += row.weight
        for metric, n in terms:
            if first <= day <= last:
                found["days"][(metric, row.area, day)] += n
        if at >= since.replace(second=0, microsecond=0):
            found["recent"][("placed", row.area)] += 1
    return {k: +v for k, v in found.items()}  # unary + drops zero entries


async def read(db: Database, first: date, last: date, since: datetime, area: str | None = None) -> dict:
    """What TALLY.read found, flattened like truth() (without zeros)."""
    async with db.read() as conn:
        counts = await TALLY.read(conn, ZONE, days=(first, last), since=since, area=area)
    return {"totals": +Counter({(m, a): n for m, per in counts.totals.items() for a, n in per.items()}),
            "days": +Counter({(m, a, d): n for m, per in counts.days.items() for a, by_day in per.items()
                              for d, n in by_day.items()}),
            "recent": +Counter({(m, a): n for m, per in counts.recent.items() for a, n in per.items()})}


def opened(url: str) -> Database:
    return Database(Settings(database_url=url, db_pool_size=4))


NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW.astimezone(ZONE).date()
WEEK = (TODAY - timedelta(days=6), TODAY)
HOUR_AGO = NOW - timedelta(hours=1)


def a_mix(url: str) -> None:
    """Rows placed over a week, some changed (kind, area, weight, time), some deleted."""
    write(url,
          place(("light", "north", 1, NOW - timedelta(days=3)), ("heavy", "north", 7, NOW - timedelta(minutes=5)),
                ("heavy", "south", 4, NOW - timedelta(minutes=70)), ("light", "south", 1, NOW),
                ("heavy", "south", 9, NOW - timedelta(days=10))),
          update(ITEMS).where(ITEMS.c.kind == "light", ITEMS.c.area == "north").values(kind="heavy", weight=3),
          update(ITEMS).where(ITEMS.c.weight == 4).values(weight=5, at=NOW - timedelta(minutes=2)),
          update(ITEMS).where(ITEMS.c.weight == 9).values(area="north"),
          ITEMS.delete().where(ITEMS.c.kind == "light"))


def test_counts_are_exact_straight_after_the_writes_and_after_the_fold(url):
    a_mix(url)
    expected = truth(url, *WEEK, HOUR_AGO)
    assert expected["totals"][("heavy_kg", "north")] == 7 + 3 + 9

    async def main():
        db = opened(url)
        try:
            queued = await read(db, *WEEK, HOUR_AGO)
            folded = await TALLY.fold(db, MemoryCache("t"), ZONE)
            return queued, folded, await read(db, *WEEK, HOUR_AGO), await read(db, *WEEK, HOUR_AGO, area="south")
        finally:
            await db.dispose()

    queued, folded, after, south = asyncio.run(main())
    assert queued == expected  # nothing folded yet: all of it from the deltas
    assert folded > 0 and scalar(url, select(func.count()).select_from(DELTAS)) == 0
    assert after == expected
    assert south == {part: Counter({k: v for k, v in c.items() if k[1] == "south"}) for part, c in expected.items()}


def test_a_day_is_the_warehouses_local_day(url):
    # Asia/Kolkata is UTC+05:30: 18:29 UTC is 23:59 there, 18:31 UTC is 00:01 the next day.
    day = TODAY - timedelta(days=2)
    evening = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=18, minutes=29)
    write(url, place(("light", "east", 1, evening), ("light", "east", 1, evening + timedelta(minutes=2)),
                     ("light", "east", 1, evening + timedelta(minutes=2, seconds=59))))
    span = (day - timedelta(days=1), day + timedelta(days=1))
    expected = {("placed", "east", day): 1, ("placed", "east", day + timedelta(days=1)): 2}

    async def main():
        db = opened(url)
        try:
            queued = (await read(db, *span, HOUR_AGO))["days"]
            await TALLY.fold(db, MemoryCache("t"), ZONE)
            return queued, (await read(db, *span, HOUR_AGO))["days"]
        finally:
            await db.dispose()

    assert asyncio.run(main()) == (expected, expected)
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        TALLY.recount(conn, ZONE)
    engine.dispose()
    assert scalar(url, select(func.sum(DAYS.c.n)).where(DAYS.c.day == day + timedelta(days=1))) == 2


def test_the_last_hour_counts_from_the_start_of_the_minute_an_hour_ago(url):
    since = HOUR_AGO.replace(second=0)
    write(url, place(("light", "west", 1, since - timedelta(seconds=1)), ("light", "west", 1, since),
                     ("light", "west", 1, NOW)))

    async def main():
        db = opened(url)
        try:
            queued = (await read(db, *WEEK, HOUR_AGO))["recent"]
            await TALLY.fold(db, MemoryCache("t"), ZONE)
            return queued, (await read(db, *WEEK, HOUR_AGO))["recent"]
        finally:
            await db.dispose()

    assert asyncio.run(main()) == ({("placed", "west"): 2}, {("placed", "west"): 2})


def test_recount_rebuilds_what_the_folds_built_and_drops_the_queue(url):
    a_mix(url)

    async def folded() -> tuple[list, list, list]:
        db = opened(url)
        try:
            await TALLY.fold(db, MemoryCache("t"), ZONE)
        finally:
            await db.dispose()
        return tables(url)

    by_folds = asyncio.run(folded())
    write(url, place(("heavy", "north", 2, NOW)))  # queued, not folded
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(update(TOTALS).values(n=TOTALS.c.n + 100))  # drifted: recount must not keep it
        TALLY.recount(conn, ZONE)
    engine.dispose()
    assert scalar(url, select(func.count()).select_from(DELTAS)) == 0
    write(url, ITEMS.delete().where(ITEMS.c.weight == 2))  # back to what was folded
    rebuilt = asyncio.run(folded())
    assert rebuilt == by_folds


def tables(url: str) -> tuple[list, list, list]:
    """Totals, days and minutes without zero rows (a fold keeps a count that went back to 0; a recount has none)."""
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        found = tuple(sorted(tuple(r) for r in conn.execute(select(t).where(t.c.n != 0))) for t in (TOTALS, DAYS, MINUTES))
    engine.dispose()
    return found


def test_per_minute_counts_older_than_the_window_are_pruned(url):
    write(url, place(("light", "north", 1, NOW - timedelta(days=3)), ("light", "north", 1, NOW)))

    async def main():
        db = opened(url)
        try:
            cache = MemoryCache("t")
            async with db.transaction() as conn:  # an old minute folded before it aged out
                await conn.execute(insert(MINUTES).values(minute=minute_of(NOW - timedelta(days=3)), metric="placed",
                                                          area="north", n=1))
            await TALLY.fold(db, cache, ZONE)
            return await TALLY.prune(db, cache)
        finally:
            await db.dispose()

    assert asyncio.run(main()) == 1
    assert scalar(url, select(func.sum(MINUTES.c.n))) == 1  # the fold kept only the recent minute


def test_an_update_that_changes_no_count_queues_nothing(url):
    write(url, place(("light", "north", 1, NOW), ("heavy", "north", 2, NOW)))
    queued = scalar(url, select(func.count()).select_from(DELTAS))
    write(url, update(ITEMS).where(ITEMS.c.kind == "light").values(weight=5),  # a light item's weight counts nowhere
          update(ITEMS).values(at=ITEMS.c.at))  # nor does writing a value over itself
    assert scalar(url, select(func.count()).select_from(DELTAS)) == queued
    write(url, update(ITEMS).where(ITEMS.c.kind == "heavy").values(weight=3))
    assert scalar(url, select(func.count()).select_from(DELTAS)) == queued + 1  # heavy_kg of its minute: +1


def test_a_bulk_statement_queues_one_aggregated_delta_per_count(backend, url):
    if backend.database_url is None:
        pytest.skip("SQLite has only row triggers: one delta row per row")
    write(url, place(*[("light", "north", 1, NOW)] * 500))
    assert scalar(url, select(func.count()).select_from(DELTAS)) == 2  # items_light, placed (one minute)


def test_two_replicas_folding_at_once_count_each_delta_once(backend, url):
    if backend.database_url is None:
        pytest.skip("SQLite has one writer at a time: folds cannot overlap")
    deltas = 40_000
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:  # one row per delta, as 40,000 single-row writes would have queued them
        conn.execute(text("INSERT INTO tally_deltas (metric, area, minute, n) SELECT 'placed', "
                          "'area' || (g % 7), :minute + (g % 5), 1 + g % 3 FROM generate_series(1, :n) AS g"),
                     {"minute": minute_of(NOW) - 4, "n": deltas})
        expected = dict(conn.execute(text("SELECT area, sum(n) FROM tally_deltas GROUP BY area")).all())
    engine.dispose()

    async def main():
        replicas = [opened(url), opened(url)]
        try:
            async def replica(db: Database) -> list[int]:
                taken = []
                while (done := await TALLY.fold(db, MemoryCache("t"), ZONE, batch=500)) or not taken:
                    taken.append(done)
                return taken

            async def reader(db: Database) -> set[int]:
                seen = set()
                for _ in range(40):
                    seen.add(sum((await read(db, *WEEK, HOUR_AGO))["totals"].values()))
                    await asyncio.sleep(0)
                return seen

            return await asyncio.gather(*(replica(db) for db in replicas), reader(replicas[0]))
        finally:
            for db in replicas:
                await db.dispose()

    first, second, totals_seen = asyncio.run(main())
    assert sum(first) + sum(second) == deltas and sum(first) and sum(second)  # both took batches, none twice
    assert totals_seen == {sum(expected.values())}  # every read mid-fold saw each delta exactly once
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        assert dict(conn.execute(select(TOTALS.c.area, TOTALS.c.n)).all()) == expected
        assert conn.execute(select(func.count()).select_from(DELTAS)).scalar() == 0
    engine.dispose()


def test_vacuum_gives_the_folded_queues_pages_back(backend, url):
    if backend.database_url is None:
        pytest.skip("SQLite reuses freed pages by itself")
    write(url, *[place(("light", f"a{i}", 1, NOW)) for i in range(300)])  # a page's worth of queued rows and more

    async def main():
        db = opened(url)
        try:
            await TALLY.fold(db, MemoryCache("t"), ZONE)
            await TALLY.vacuum(db)
        finally:
            await db.dispose()

    assert scalar(url, text("SELECT pg_relation_size('tally_deltas')")) > 0
    asyncio.run(main())
    assert scalar(url, text("SELECT pg_relation_size('tally_deltas')")) == 0  # the empty queue truncated
