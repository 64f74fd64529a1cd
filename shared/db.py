"""A service's database: async engines with explicit pools, built in the app lifespan.

Served through SQLAlchemy's asyncio extension over asyncpg (PostgreSQL) or aiosqlite (SQLite), on the event
loop: measured on these machines, one child scan through SQLAlchemy cost 2.25 ms of server CPU with sync
psycopg2 from a thread pool and 1.52 ms with asyncpg (`bench/concurrency_model.py`, docs/performance.md), and
the threads' GIL hand-offs were half of the old write path's time. psycopg2 stays for migrations and seeding.

Reads run in autocommit (one round trip, no BEGIN/COMMIT); writes go through shared.unit_of_work.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared.errors import ServiceUnavailable
from shared.settings import ServiceSettings

_ASYNC_DRIVERS = {"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}


class DatabaseUnavailable(ServiceUnavailable):
    """503: the service's own database cannot be reached (down, restarting, refusing connections)."""

    slug = "database-unavailable"


def async_url(url: str) -> str:
    """The same database through the async driver this project serves with."""
    parsed = make_url(url)
    return parsed.set(drivername=_ASYNC_DRIVERS[parsed.get_backend_name()]).render_as_string(hide_password=False)


def create_db_engine(url: str, *, service: str = "bagtrack", pool_size: int = 5, max_overflow: int = 5,
                     pool_timeout: float = 2.0, statement_timeout_ms: int = 0) -> AsyncEngine:
    """An async engine sized explicitly; an exhausted pool fails in pool_timeout seconds, not 30."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(async_url(url), pool_size=pool_size, max_overflow=max_overflow,
                                     pool_timeout=pool_timeout, connect_args={"timeout": 5})
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    server_settings = {"application_name": f"bagtrack-{service}", "TimeZone": "UTC"}
    if statement_timeout_ms:
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    # No pre-ping: it is a round trip per checkout (a second one for a one-statement write). A connection that
    # died with the server fails its request with a 503, and SQLAlchemy then recycles every older connection.
    return create_async_engine(async_url(url), pool_size=pool_size, max_overflow=max_overflow,
                               pool_timeout=pool_timeout, pool_recycle=1800,
                               connect_args={"timeout": 3, "server_settings": server_settings})


def _sqlite_connect(dbapi_connection, _record) -> None:
    # WAL lets readers proceed during a write; foreign keys are off by default in SQLite. The driver's own
    # transaction handling is turned off so that _sqlite_begin decides how a transaction starts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn) -> None:
    # A write takes SQLite's single write lock up front (IMMEDIATE): a deferred transaction that reads first
    # and writes later fails at once with "database is locked" when another writer got in between.
    if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """A service's engines (primary and optional read replica)."""

    def __init__(self, settings: ServiceSettings) -> None:
        options = dict(service=settings.service_name, pool_size=settings.db_pool_size,
                       max_overflow=settings.db_max_overflow, pool_timeout=settings.db_pool_timeout,
                       statement_timeout_ms=settings.db_statement_timeout_ms)
        self.engine = create_db_engine(settings.database_url, **options)
        self.read_engine = (create_db_engine(settings.database_read_url, **options)
                            if settings.database_read_url else self.engine)
        self.dialect = self.engine.dialect.name
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read_autocommit = self.read_engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads, in autocommit: each statement one round trip, seeing the latest commit.
        From the read replica when one is configured."""
        async with _connected(self._read_autocommit) as conn:
            yield conn

    @asynccontextmanager
    async def connection(self, *, autocommit: bool) -> AsyncIterator[AsyncConnection]:
        """A primary connection for shared.unit_of_work: autocommit for a write that is one statement."""
        async with _connected(self._autocommit if autocommit else self.engine) as conn:
            yield conn

    async def ping(self) -> None:
        """Raise if the primary database does not answer a trivial query."""
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


@asynccontextmanager
async def _connected(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """engine.connect(), with "cannot connect at all" (refused, unreachable, timed out) as a clean 503."""
    try:
        conn = await engine.connect()
    except (OSError, TimeoutError, OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable("database unavailable") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable("database unavailable") from exc
        raise
    try:
        yield conn
    finally:
        await conn.close()
