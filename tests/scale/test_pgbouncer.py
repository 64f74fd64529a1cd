"""The services' database code behind a real pgbouncer in transaction mode (Debian's 1.18), with far fewer server
connections than clients so that consecutive transactions of one client land on different server connections.

With DB_PGBOUNCER=true every path — direct reads and one-statement writes, SQLAlchemy transactions, server-side
cursors — gives the right answer under concurrency; without it the same load fails (the control shows the test
can fail); statement_timeout comes from pgbouncer's connect_query; migrations run through it, two at once."""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, inspect, pool, select, text

from scripts.pgbouncer import Bouncer, pgbouncer_binary
from scripts.stack import ROOT
from services.scanning.config import Settings
from shared.db import Database
from shared.migrate import ensure_database_exists
from tests.scale.conftest import free_block
from tests.support import (IN_CI, PG_URL, drop_pg_databases, pg_database_url, reachable, require_postgres,
                           wait_for)

THINGS = Table("pgb_things", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(40)),
               Column("kind", Integer))
TIMEOUT_MS = 4321


@pytest.fixture(scope="module")
def bouncer():
    require_postgres()
    binary = pgbouncer_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("pgbouncer is not installed (scripts/ensure-tools.sh installs it; CI=true: these must run)")
        pytest.skip("pgbouncer is not installed; `make tools` installs it")
    prefix = f"bt_pgb_{os.getpid()}"
    drop_pg_databases(prefix)
    port = free_block(2)
    # Two server connections per database for up to 30 clients: transactions are handed whichever is free.
    # Not under pytest's tmp_path (mode 0700): started as root, pgbouncer runs as `nobody` and reads its files.
    bouncer = Bouncer(Path(tempfile.mkdtemp(prefix="bagtrack-pgbouncer-")), port, PG_URL, pool_size=2,
                      timeouts={f"{prefix}_things": TIMEOUT_MS, f"{prefix}_scanning": TIMEOUT_MS})
    bouncer.write()
    proc = subprocess.Popen(bouncer.command(binary, as_root=os.geteuid() == 0), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        try:
            wait_for(lambda: reachable("127.0.0.1", port), 10, "pgbouncer listening")
        except pytest.fail.Exception:
            pytest.fail("pgbouncer did not start: " + (bouncer.directory / "pgbouncer.log").read_text()[-2000:])
        direct = pg_database_url(f"{prefix}_things")
        ensure_database_exists(direct)
        engine = create_engine(direct, poolclass=pool.NullPool)
        with engine.begin() as conn:
            THINGS.create(conn)
            conn.execute(insert(THINGS), [{"name": f"t{i}", "kind": i % 7} for i in range(700)])
        engine.dispose()
        yield bouncer, prefix
    finally:
        proc.terminate()
        proc.wait(10)
        drop_pg_databases(prefix)
        shutil.rmtree(bouncer.directory, ignore_errors=True)


def _through(bouncer_and_prefix, database: str) -> str:
    bouncer, prefix = bouncer_and_prefix
    return bouncer.url(pg_database_url(f"{prefix}_{database}"))


def _mixed_load(url: str, *, pgbouncer: bool, rounds: int = 60) -> tuple[int, list[str]]:
    """30 concurrent clients on a pool of 10, each path in turn; the number of checked answers and the errors."""

    async def main():
        db = Database(Settings(database_url=url, db_pool_size=10, db_pool_timeout=10, db_pgbouncer=pgbouncer,
                               db_statement_timeout_ms=TIMEOUT_MS if pgbouncer else 0))
        checked, errors = 0, []

        async def client(n: int) -> None:
            nonlocal checked
            for i in range(rounds):
                kind = (n + i) % 7
                try:
                    match i % 4:
                        case 0:  # direct read, seven statement shapes
                            async with db.read() as conn:
                                rows = await conn.rows(select(THINGS.c.kind).where(THINGS.c.kind == kind)
                                                       .where(THINGS.c.id > kind).limit(100 + kind))
                            assert {r["kind"] for r in rows} == {kind} and len(rows) == 100, rows[:3]
                        case 1:  # direct one-statement write
                            async with db.one_statement() as conn:
                                changed = await conn.execute(text(  # row id k+1 is of kind k
                                    f"UPDATE pgb_things SET name = :name WHERE id = :id AND kind = {kind}"),
                                    {"name": f"c{n}-{i}", "id": kind + 1})
                            assert changed == 1, changed
                        case 2:  # SQLAlchemy transaction: a write and a read of it
                            async with db.transaction() as conn:
                                new_id = await conn.scalar(insert(THINGS).values(name=f"n{n}-{i}", kind=100 + kind)
                                                           .returning(THINGS.c.id))
                                name = await conn.scalar(select(THINGS.c.name).where(THINGS.c.id == new_id))
                            assert name == f"n{n}-{i}", name
                        case 3:  # a server-side cursor
                            async with db.read() as conn:
                                seen = [r["id"] async for r in conn.stream(
                                    select(THINGS.c.id).where(THINGS.c.kind == kind).order_by(THINGS.c.id), batch=7)]
                            assert len(seen) == 100 and seen == sorted(seen), seen[:3]
                    checked += 1
                except Exception as exc:  # noqa: BLE001 — every failure is counted, then shown
                    errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")

        try:
            await asyncio.gather(*(client(n) for n in range(30)))
        finally:
            await db.dispose()
        return checked, errors

    return asyncio.run(main())


def test_every_path_holds_under_transaction_pooling(bouncer):
    checked, errors = _mixed_load(_through(bouncer, "things"), pgbouncer=True)
    assert errors == [], errors[:5]
    assert checked == 30 * 60


def test_without_the_setting_prepared_statements_go_astray(bouncer):
    """The control: asyncpg's statement cache kept in the client connection meets other server connections."""
    checked, errors = _mixed_load(_through(bouncer, "things"), pgbouncer=False, rounds=20)
    assert errors, "expected prepared-statement errors through transaction pooling without DB_PGBOUNCER"
    assert any("prepared statement" in e for e in errors), errors[:5]


def test_statement_timeout_comes_from_connect_query(bouncer, caplog):
    async def main(timeout_ms: int):
        db = Database(Settings(database_url=_through(bouncer, "things"), db_pool_size=2, db_pgbouncer=True,
                               db_statement_timeout_ms=timeout_ms))
        try:
            async with db.read() as conn:
                seen = await conn.scalar(text("SELECT current_setting('statement_timeout')"))
            with caplog.at_level(logging.WARNING, logger="bagtrack.db"):
                await db.check_session()
            return seen
        finally:
            await db.dispose()

    assert asyncio.run(main(TIMEOUT_MS)) == f"{TIMEOUT_MS}ms"
    assert "statement_timeout" not in caplog.text
    asyncio.run(main(9999))  # this service wants another timeout than pgbouncer sets: said at start-up
    assert "not this service's 9999 ms" in caplog.text


def test_two_migrators_at_once_through_pgbouncer(bouncer):
    """The migration lock is transaction-scoped, so it holds through transaction pooling: the second migrator
    waits, then finds the schema at head."""
    url = _through(bouncer, "scanning")
    # Processes, not threads: alembic's migration context is one per process.
    code = "import sys; from shared.migrate import upgrade; upgrade('scanning', sys.argv[1])"
    migrators = [subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [m.communicate(timeout=120)[0] for m in migrators]
    assert [m.returncode for m in migrators] == [0, 0], outputs
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        assert "bags" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()
