"""shared.db on a real PostgreSQL: Core statements straight through asyncpg (compiled once per shape, values
bound fresh), errors translated like SQLAlchemy's, a killed connection a 503 that the pool recovers from."""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, pool, select, text
from sqlalchemy.exc import IntegrityError

from services.scanning.config import Settings
from shared.db import Database, DatabaseUnavailable
from shared.migrate import ensure_database_exists

THINGS = Table("db_things", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(20), unique=True),
               Column("kind", String(10)))


@pytest.fixture
def pg_url(backend) -> str:
    if backend.database_url is None:
        pytest.skip("the direct asyncpg path is PostgreSQL's; SQLite goes through SQLAlchemy")
    url = Settings(shared_database_url=backend.database_url).database_url.replace("_scanning", "_dbtest")
    ensure_database_exists(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        THINGS.drop(conn, checkfirst=True)
        THINGS.create(conn)
        conn.execute(insert(THINGS), [{"name": f"t{i}", "kind": "odd" if i % 2 else "even"} for i in range(10)])
    engine.dispose()
    return url


def run(url: str, body):
    async def main():
        db = Database(Settings(database_url=url, db_pool_size=2))
        try:
            return await body(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def test_reads_bind_fresh_values_into_the_cached_statement(pg_url):
    async def body(db):
        async with db.read() as conn:
            odd = await conn.rows(select(THINGS).where(THINGS.c.kind == "odd").order_by(THINGS.c.id).limit(2))
            even = await conn.rows(select(THINGS).where(THINGS.c.kind == "even").order_by(THINGS.c.id).limit(3))
            one = await conn.row(select(THINGS.c.name).where(THINGS.c.id == 4))  # ids start at 1: t3 is the fourth
            count = await conn.scalar(text("SELECT count(*) FROM db_things WHERE kind = :k"), {"k": "odd"})
        return [r["name"] for r in odd], [r["name"] for r in even], one["name"], count

    assert run(pg_url, body) == (["t1", "t3"], ["t0", "t2", "t4"], "t3", 5)


def test_a_unique_violation_is_sqlalchemys_integrity_error(pg_url):
    async def body(db):
        async with db.one_statement() as conn:
            with pytest.raises(IntegrityError):
                await conn.execute(text("INSERT INTO db_things (name, kind) VALUES ('t1', 'dup')"))
            return await conn.execute(text("UPDATE db_things SET kind = 'x' WHERE kind = 'odd'"))

    assert run(pg_url, body) == 5  # the rows the statement changed


def test_dml_that_may_need_python_defaults_is_refused_on_a_direct_connection(pg_url):
    async def body(db):
        async with db.read() as conn:
            with pytest.raises(TypeError, match="db.transaction"):
                await conn.execute(insert(THINGS).values(name="t99"))
        async with db.transaction() as conn:  # the transaction runs it through SQLAlchemy
            return await conn.execute(insert(THINGS).values(name="t99", kind="new"))

    assert run(pg_url, body) == 1


def test_a_connection_killed_under_a_request_is_a_503_and_the_pool_replaces_it(pg_url):
    async def body(db):
        async with db.read() as victim:
            pid = await victim.scalar(text("SELECT pg_backend_pid()"))
            async with db.read() as killer:
                await killer.scalar(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            await asyncio.sleep(0.2)
            with pytest.raises(DatabaseUnavailable):
                await victim.scalar(text("SELECT 1"))
        answers = []
        for _ in range(4):  # every connection the pool hands out now works
            async with db.read() as conn:
                answers.append(await conn.scalar(text("SELECT pg_backend_pid() <> :p"), {"p": pid}))
        return answers

    assert run(pg_url, body) == [True] * 4


def test_a_database_that_is_not_there_is_a_503_at_checkout(tmp_path):
    from tests.support import free_port

    url = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nothing"

    async def body(db):
        with pytest.raises(DatabaseUnavailable):
            async with db.read():
                pass

    run(url, body)
