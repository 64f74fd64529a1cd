"""The app `bench/concurrency_model.py` measures: one child scan through SQLAlchemy, in one of three models.

    BENCH_MODEL=sync|asyncpg|psycopg  BENCH_DB=postgresql://postgres@127.0.0.1:5432/<db>
    uvicorn bench.concurrency_model_app:app

POST /one   — the child scan as ONE statement (claim a slot, link the child, write the scan row), autocommit.
POST /many  — the same rules as a transaction of separate statements (BEGIN, read parent, read child, insert child,
              claim slot, insert scan, COMMIT): the shape of the scanning service's write path before the rework.
Both answer a small pydantic model, like the service does.
"""
from __future__ import annotations

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

MODEL = os.environ.get("BENCH_MODEL", "asyncpg")
DB = os.environ.get("BENCH_DB", "postgresql://postgres@127.0.0.1:5432/bagtrack_bench_model")
POOL = int(os.environ.get("BENCH_POOL", "20"))

ONE = text("""
with p as (update bench_parents set child_count = child_count + 1
           where qr = :p and child_count < capacity returning id, child_count),
     c as (insert into bench_children (qr, parent_id) select :c, id from p
           on conflict (qr) do nothing returning id),
     s as (insert into bench_scans (parent_qr, child_qr) select :p, :c from c returning 1)
select (select id from p), (select child_count from p), (select id from c)""")
READ_PARENT = text("select id, child_count, capacity from bench_parents where qr = :p")
READ_CHILD = text("select id, parent_id from bench_children where qr = :c")
INSERT_CHILD = text("insert into bench_children (qr, parent_id) values (:c, :pid) returning id")
CLAIM = text("update bench_parents set child_count = child_count + 1 where id = :pid and child_count < capacity "
             "returning child_count")
INSERT_SCAN = text("insert into bench_scans (parent_qr, child_qr) values (:p, :c)")


class ScanIn(BaseModel):
    parent: str
    child: str


class ScanOut(BaseModel):
    parent: str
    child: str
    child_count: int | None
    linked: bool


def url_for(model: str) -> str:
    driver = {"sync": "psycopg2", "asyncpg": "asyncpg", "psycopg": "psycopg"}[model]
    return DB.replace("postgresql://", f"postgresql+{driver}://")


if MODEL == "sync":
    import anyio.to_thread

    engine = create_engine(url_for("sync"), pool_size=POOL, max_overflow=0)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def lifespan(_app):
        # The thread limit sized with the pool: more threads than connections only queue on the pool (and the GIL).
        anyio.to_thread.current_default_thread_limiter().total_tokens = POOL
        yield
        engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/one")
    def one(body: ScanIn) -> ScanOut:
        with autocommit.connect() as conn:
            pid, count, cid = conn.execute(ONE, {"p": body.parent, "c": body.child}).one()
        return ScanOut(parent=body.parent, child=body.child, child_count=count, linked=cid is not None)

    @app.post("/many")
    def many(body: ScanIn) -> ScanOut:
        with engine.begin() as conn:
            parent = conn.execute(READ_PARENT, {"p": body.parent}).one()
            conn.execute(READ_CHILD, {"c": body.child}).first()
            conn.execute(INSERT_CHILD, {"c": body.child, "pid": parent.id})
            count = conn.execute(CLAIM, {"pid": parent.id}).scalar()
            conn.execute(INSERT_SCAN, {"p": body.parent, "c": body.child})
        return ScanOut(parent=body.parent, child=body.child, child_count=count, linked=True)
else:
    engine = create_async_engine(url_for(MODEL), pool_size=POOL, max_overflow=0)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def lifespan(_app):
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/one")
    async def one(body: ScanIn) -> ScanOut:
        async with autocommit.connect() as conn:
            pid, count, cid = (await conn.execute(ONE, {"p": body.parent, "c": body.child})).one()
        return ScanOut(parent=body.parent, child=body.child, child_count=count, linked=cid is not None)

    @app.post("/many")
    async def many(body: ScanIn) -> ScanOut:
        async with engine.begin() as conn:
            parent = (await conn.execute(READ_PARENT, {"p": body.parent})).one()
            (await conn.execute(READ_CHILD, {"c": body.child})).first()
            await conn.execute(INSERT_CHILD, {"c": body.child, "pid": parent.id})
            count = (await conn.execute(CLAIM, {"pid": parent.id})).scalar()
            await conn.execute(INSERT_SCAN, {"p": body.parent, "c": body.child})
        return ScanOut(parent=body.parent, child=body.child, child_count=count, linked=True)
