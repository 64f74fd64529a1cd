"""What a statement costs through SQLAlchemy's asyncio layer vs straight through asyncpg, on one machine.

    .venv/bin/python bench/db_path.py     (PostgreSQL on 127.0.0.1:5432; a throw-away table in database "test")

Prints the CPU per operation (median of three rounds of 1,000): a short SELECT on a held connection through
`AsyncConnection.execute` and through the asyncpg connection under it, and a whole checkout + SELECT + release
both ways (the second is how shared.db runs PostgreSQL reads and one-statement writes).
"""
import statistics
import time

import uvloop
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.util.concurrency import greenlet_spawn

URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
SQL = "SELECT id, name FROM bench_db_path WHERE name = $1"


async def main() -> None:
    engine = create_async_engine(URL, pool_size=5, max_overflow=0, connect_args={"ssl": False})
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    statement = text("SELECT id, name FROM bench_db_path WHERE name = :n")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS bench_db_path (id serial PRIMARY KEY, name text UNIQUE)"))
        await conn.execute(text("INSERT INTO bench_db_path (name) VALUES ('a') ON CONFLICT DO NOTHING"))

    async def sa_held(conn, raw):
        (await conn.execute(statement, {"n": "a"})).first()

    async def raw_held(conn, raw):
        await raw.fetchrow(SQL, "a")

    async def sa_checkout(conn, raw):
        async with autocommit.connect() as c:
            (await c.execute(statement, {"n": "a"})).first()

    async def pool_checkout(conn, raw):
        pooled = await engine.raw_connection()
        try:
            await pooled.driver_connection.fetchrow(SQL, "a")
        finally:
            await greenlet_spawn(pooled.close)

    cases = {"SELECT, held connection, AsyncConnection.execute": sa_held,
             "SELECT, held connection, asyncpg": raw_held,
             "checkout (autocommit) + SELECT + release, SQLAlchemy": sa_checkout,
             "pool checkout + SELECT (asyncpg) + release": pool_checkout}
    results = {name: [] for name in cases}
    async with autocommit.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        for _ in range(3):
            for name, case in cases.items():
                for _ in range(100):
                    await case(conn, raw)
                started = time.process_time()
                for _ in range(1000):
                    await case(conn, raw)
                results[name].append((time.process_time() - started) / 1000)
    for name, values in results.items():
        print(f"{name:56s} {statistics.median(values) * 1e6:6.0f} µs CPU")
    await engine.dispose()


if __name__ == "__main__":
    uvloop.run(main())
