"""The one write path (shared.unit_of_work) on both backends: one commit, invalidation after it, lost races run
again, idempotency keys replay — in a transaction, and folded into one PostgreSQL statement."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, func, insert, pool, select, text

from services.scanning.config import Settings
from shared.cache import TOMBSTONE, MemoryCache
from shared.db import Database
from shared.errors import ServiceUnavailable
from shared.migrate import ensure_database_exists
from shared.unit_of_work import (IDEMPOTENT_REQUESTS, PRIOR_CTE, Idempotency, KeyReused, LostRace, UnitOfWork,
                                 record_cte, run_write)

NOTES = Table("uow_notes", MetaData(), Column("id", Integer, primary_key=True), Column("body", String(50)))


@pytest.fixture
def database_url(backend, tmp_path) -> str:
    url = (f"sqlite:///{tmp_path}/uow.db" if backend.database_url is None
           else Settings(shared_database_url=backend.database_url).database_url.replace("_scanning", "_uow"))
    ensure_database_exists(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        for table in (NOTES, IDEMPOTENT_REQUESTS):
            table.drop(conn, checkfirst=True)
            table.create(conn)
    engine.dispose()
    return url


@asynccontextmanager
async def opened(url: str):
    db = Database(Settings(database_url=url))
    try:
        yield db, MemoryCache("test")
    finally:
        await db.dispose()


def count_notes(url: str) -> int:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(NOTES)).scalar()
    engine.dispose()
    return count


def note(body: str):
    async def write(work: UnitOfWork) -> dict:
        await work.execute(insert(NOTES).values(body=body))
        work.touch(f"note:{body}")
        return {"body": body}

    return write


def test_a_write_commits_once_and_invalidates_what_it_touched_after_the_commit(database_url):
    async def main():
        async with opened(database_url) as (db, cache):
            written = await run_write(db, cache, note("first"))
            assert (written.result, written.replayed) == ({"body": "first"}, False)
            assert await cache.get("note:first") == TOMBSTONE

    asyncio.run(main())
    assert count_notes(database_url) == 1


def test_a_rule_that_refuses_rolls_everything_back_and_invalidates_nothing(database_url):
    async def refuse(work: UnitOfWork) -> None:
        await note("half")(work)
        raise ServiceUnavailable("no")

    async def main():
        async with opened(database_url) as (db, cache):
            with pytest.raises(ServiceUnavailable):
                await run_write(db, cache, refuse)
            assert await cache.get("note:half") is None

    asyncio.run(main())
    assert count_notes(database_url) == 0


def test_a_lost_race_runs_again_and_a_third_loss_is_a_503(database_url):
    attempts = []

    async def lose_once(work: UnitOfWork) -> dict:
        attempts.append(1)
        await work.execute(insert(NOTES).values(body=f"try {len(attempts)}"))
        if len(attempts) == 1:
            raise LostRace
        return {}

    async def always_lose(work: UnitOfWork) -> None:
        raise LostRace

    async def main():
        async with opened(database_url) as (db, cache):
            await run_write(db, cache, lose_once)
            with pytest.raises(ServiceUnavailable, match="retry"):
                await run_write(db, cache, always_lose)

    asyncio.run(main())
    assert len(attempts) == 2 and count_notes(database_url) == 1  # the lost attempt's insert was rolled back


def test_a_retry_with_its_key_replays_the_first_result_and_writes_once(database_url):
    first = Idempotency.of(7, "key-1", "note", {"body": "a"})

    async def main():
        async with opened(database_url) as (db, cache):
            one = await run_write(db, cache, note("a"), idempotency=first)
            two = await run_write(db, cache, note("a"), idempotency=first)
            assert (one.replayed, two.replayed, two.result) == (False, True, {"body": "a"})
            with pytest.raises(KeyReused):
                await run_write(db, cache, note("b"), idempotency=Idempotency.of(7, "key-1", "note", {"body": "b"}))
            # Keys are per user: another user's same key is another request.
            assert (await run_write(db, cache, note("a"), idempotency=Idempotency.of(8, "key-1", "note",
                                                                                     {"body": "a"}))).replayed is False

    asyncio.run(main())
    assert count_notes(database_url) == 2


def test_the_same_key_sent_many_times_at_once_writes_once(database_url):
    request = Idempotency.of(7, "burst", "note", {"body": "x"})

    async def main():
        async with opened(database_url) as (db, cache):
            results = await asyncio.gather(*(run_write(db, cache, note("x"), idempotency=request) for _ in range(8)))
            assert sum(not r.replayed for r in results) == 1 and {r.result["body"] for r in results} == {"x"}

    asyncio.run(main())
    assert count_notes(database_url) == 1


ONE_STATEMENT_NOTE = text(f"""
WITH {PRIOR_CTE},
added AS (INSERT INTO uow_notes (body) SELECT CAST(:body AS varchar) WHERE NOT EXISTS (SELECT 1 FROM prior)
          RETURNING id, body),
{record_cte("(SELECT json_build_object('body', body)::text FROM added)", "EXISTS (SELECT 1 FROM added)")}
SELECT (SELECT fingerprint FROM prior) AS prior_fingerprint, (SELECT response FROM prior) AS prior_response,
       (SELECT body FROM added) AS body""")


def test_one_statement_writes_fold_the_key_lookup_and_its_record_into_the_statement(backend, database_url):
    if backend.database_url is None:
        pytest.skip("writable CTEs are PostgreSQL's; SQLite runs the same writes as a transaction")
    request = Idempotency.of(7, "one", "note", {"body": "solo"})

    async def write(work: UnitOfWork):
        row = await work.row(ONE_STATEMENT_NOTE, {"body": "solo", **work.idempotency_params()})
        if work.replay(row["prior_fingerprint"], row["prior_response"]) is not None:
            return None
        return {"body": row["body"]}

    async def main():
        async with opened(database_url) as (db, cache):
            results = [await run_write(db, cache, write, idempotency=request, one_statement=True) for _ in range(2)]
            assert [(r.result, r.replayed) for r in results] == [({"body": "solo"}, False), ({"body": "solo"}, True)]
            burst = await asyncio.gather(*(run_write(db, cache, write, one_statement=True,
                                                     idempotency=Idempotency.of(9, "b", "note", {"body": "solo"}))
                                           for _ in range(6)))
            assert sum(not r.replayed for r in burst) == 1

    asyncio.run(main())
    assert count_notes(database_url) == 2


def test_a_deadlock_victim_is_run_again_and_both_writes_land(backend, database_url):
    if backend.database_url is None:
        pytest.skip("deadlocks between transactions are PostgreSQL's; SQLite has one writer")
    engine = create_engine(database_url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(insert(NOTES), [{"id": 1, "body": "a"}, {"id": 2, "body": "b"}])
    engine.dispose()
    attempts = {"forward": 0, "backward": 0}

    def crossing(name: str, first: int, second: int, mine: asyncio.Event, theirs: asyncio.Event):
        async def write(work: UnitOfWork) -> str:
            attempts[name] += 1
            await work.execute(NOTES.update().where(NOTES.c.id == first).values(body=name))
            if attempts[name] == 1:  # first round: hold `first` until the other holds its own, then cross
                mine.set()
                await theirs.wait()
            await work.execute(NOTES.update().where(NOTES.c.id == second).values(body=name))
            return name

        return write

    async def main():
        async with opened(database_url) as (db, cache):
            a, b = asyncio.Event(), asyncio.Event()
            return await asyncio.gather(run_write(db, cache, crossing("forward", 1, 2, a, b)),
                                        run_write(db, cache, crossing("backward", 2, 1, b, a)))

    results = asyncio.run(main())
    assert sorted(w.result for w in results) == ["backward", "forward"]
    assert sorted(attempts.values()) == [1, 2]  # PostgreSQL chose one victim; its unit of work ran it again
