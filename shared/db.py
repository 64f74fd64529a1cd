"""A service's database: SQLAlchemy async engines (pool, dialect, statement compilation), built in the lifespan.

Served on the event loop through async drivers: asyncpg (PostgreSQL) and aiosqlite (SQLite). Measured here
(`bench/concurrency_model.py`, docs/performance.md): one child scan through SQLAlchemy cost 2.28 ms of server
CPU with sync psycopg2 from a thread pool and 1.47 ms with asyncpg; psycopg2 stays for migrations and seeding.

Statements are always SQLAlchemy Core, but on PostgreSQL the hot paths — every read, and each write that is one
statement — skip SQLAlchemy's execution layer: the statement is compiled once (SQLAlchemy's own cache key) and
sent through the pooled asyncpg connection. Measured (`bench/db_path.py`), a short SELECT on a held connection
cost 360 µs of CPU through `AsyncConnection.execute` and 68 µs straight through asyncpg; checkout + SELECT +
release 601 µs through SQLAlchemy in autocommit, 201 µs this way. Multi-statement transactions (and everything on SQLite, the laptop mode)
go through SQLAlchemy as usual.

Behind pgbouncer in transaction mode (`DB_PGBOUNCER=true`) a client connection reaches a different server
connection in each transaction, so nothing may live in a server session: no prepared statement is kept (asyncpg's
statement cache and SQLAlchemy's are off; a statement is prepared unnamed, or under a unique name when a cursor
needs one), and `statement_timeout` cannot ride in the startup packet (pgbouncer 1.18 refuses unknown startup
parameters): pgbouncer sets it on its server connections (`connect_query`, see scripts/fleet.py), and
`Database.check_session` says so at start-up if it does not. asyncpg prepares with Parse/Describe/Flush — no Sync
— so an unnamed statement's prepare and its execution stay on one server connection even outside a transaction
(shown against a real pgbouncer in tests/scale/test_pgbouncer.py).
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Mapping, Sequence

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util.concurrency import greenlet_spawn
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import Select

from shared import deadline
from shared.breaker import CircuitBreaker, CircuitOpen
from shared.deadline import DeadlineExceeded
from shared.errors import DependencyUnavailable, ServiceUnavailable, problem_response
from shared.metrics import DB_POOLS
from shared.settings import ServiceSettings

log = logging.getLogger("bagtrack.db")

_ASYNC_DRIVERS = {"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}
_COMPILED_CACHE_SIZE = 1000
# asyncpg errors that mean "this connection (or the server) is gone", not "this statement is wrong".
_CONNECTION_LOST = (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.InterfaceError,
                    asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CannotConnectNowError,
                    asyncpg.exceptions.ConnectionFailureError, OSError)

Row = Mapping[str, Any]


# SQLSTATEs of a statement that lost to another transaction: rolled back by the server, safe to run again.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
_STATEMENT_TIMEOUT = "57014"  # query_canceled (statement_timeout)


class DatabaseUnavailable(DependencyUnavailable):
    """503: the service's own database cannot be reached (down, restarting, refusing connections).

    It names the database in X-Dependency-Failure: the service itself is well (cached reads still answer), so
    the gateway's breaker for the service must not open on it."""

    slug = "database-unavailable"

    def __init__(self, detail: str = "database unavailable", *, retry_after: int = 2) -> None:
        super().__init__(detail, dependency="database", retry_after=retry_after)


class DatabaseTimeout(DatabaseUnavailable):
    """503: a statement ran past statement_timeout (the database is slow, or the query is)."""

    slug = "database-timeout"


class DatabaseBusy(ServiceUnavailable):
    """503: every pooled connection stayed busy for db_pool_timeout — this replica is overloaded. No
    X-Dependency-Failure: an overloaded service is what its callers' breakers are for."""

    slug = "database-busy"


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL error code behind a (wrapped) driver error, if any."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def install_database_error_handlers(app: FastAPI) -> None:
    """What each database failure answers, and how loudly it is logged: each kind separately, so an SRE can
    tell "cannot connect" from a slow statement, a deadlock or a full pool."""

    @app.exception_handler(PoolTimeoutError)
    async def _pool(_: Request, exc: PoolTimeoutError) -> JSONResponse:
        log.error("database pool exhausted (503 database-busy): %s", exc)
        return _answer(DatabaseBusy("database busy, retry shortly", retry_after=1))

    @app.exception_handler(DBAPIError)
    async def _dbapi(_: Request, exc: DBAPIError) -> JSONResponse:
        code = sqlstate(exc)
        if code == _STATEMENT_TIMEOUT:
            log.error("statement timeout (503 database-timeout): %s", exc.orig)
            return _answer(DatabaseTimeout("the database did not finish in time; retry shortly", retry_after=1))
        if code in RETRYABLE_SQLSTATES:
            # The unit of work re-runs these; reaching here means a read, or three lost rounds in a row.
            log.error("deadlock or serialization failure (503 database-conflict): %s", exc.orig)
            return _answer(ServiceUnavailable("conflicting concurrent changes; retry", retry_after=1,
                                              slug="database-conflict"))
        if exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)):
            log.error("database unavailable (503 database-unavailable): %s", exc.orig)
            return _answer(DatabaseUnavailable())
        raise exc  # a bug: RequestContextMiddleware logs it and answers the one 500


def _answer(problem: ServiceUnavailable) -> JSONResponse:
    return problem_response(problem.status, problem.detail, slug=problem.slug, headers=problem.headers)


def async_url(url: str) -> str:
    """The same database through the async driver this project serves with."""
    parsed = make_url(url)
    return parsed.set(drivername=_ASYNC_DRIVERS[parsed.get_backend_name()]).render_as_string(hide_password=False)


def _unique_statement_name() -> str:
    return f"__bagtrack_{uuid.uuid4().hex}__"


def create_db_engine(url: str, *, service: str = "bagtrack", pool_size: int = 5, max_overflow: int = 5,
                     pool_timeout: float = 2.0, statement_timeout_ms: int = 0, pgbouncer: bool = False) -> AsyncEngine:
    """An async engine sized explicitly; an exhausted pool fails in pool_timeout seconds, not 30. `pgbouncer`:
    nothing kept in the server session (see the module's docstring)."""
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
    if statement_timeout_ms and not pgbouncer:
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    connect_args: dict = {"timeout": 3, "server_settings": server_settings}
    if pgbouncer:
        # asyncpg's own cache (the direct path) and SQLAlchemy's (transactions); SQLAlchemy then prepares each
        # statement under a fresh name, never one another client left on the same server connection.
        connect_args.update(statement_cache_size=0, prepared_statement_cache_size=0,
                            prepared_statement_name_func=_unique_statement_name)
    if not {"ssl", "sslmode"} & set(parsed.query):
        # asyncpg's default ("prefer") asks for TLS first on every new connection; ask for it in the URL
        # (?ssl=require) when the database is not on a trusted network.
        connect_args["ssl"] = False
    # No pre-ping: it is a round trip per checkout (a second one for a one-statement write). A connection that
    # died with the server fails its request with a 503, and SQLAlchemy then recycles every older connection.
    return create_async_engine(async_url(url), pool_size=pool_size, max_overflow=max_overflow,
                               pool_timeout=pool_timeout, pool_recycle=1800, connect_args=connect_args)


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


def _milliseconds(setting: str) -> int:
    """A duration setting as PostgreSQL shows it ("10s", "500ms", "0") in milliseconds."""
    for unit, factor in (("ms", 1), ("s", 1000), ("min", 60_000), ("h", 3_600_000), ("d", 86_400_000)):
        if setting.endswith(unit) and setting[: -len(unit)].isdigit():
            return int(setting[: -len(unit)]) * factor
    return int(setting) if setting.isdigit() else -1


class Conn:
    """One pooled connection, running Core statements: `rows`, `row`, `scalar`, `execute`, `stream`.

    Rows are mappings (`row["qr_id"]`). `direct` connections (PostgreSQL reads and one-statement writes) send
    SELECTs and text() statements straight through asyncpg, in autocommit; the others go through SQLAlchemy.
    """

    def __init__(self, database: "Database", *, sa: AsyncConnection | None = None, pooled=None) -> None:
        self.dialect, self._db, self.sa, self._pooled = database.dialect, database, sa, pooled
        self._driver: asyncpg.Connection | None = pooled.driver_connection if pooled is not None else None

    async def rows(self, statement: Executable, params: Mapping[str, Any] | None = None) -> list[Row]:
        if self._driver is not None:
            sql, args = self._db.compiled(statement, params)
            return await self._direct(self._driver.fetch, sql, args)
        return [row._mapping for row in (await self.sa.execute(statement, params or {})).all()]

    async def row(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Row | None:
        if self._driver is not None:
            sql, args = self._db.compiled(statement, params)
            return await self._direct(self._driver.fetchrow, sql, args)
        row = (await self.sa.execute(statement, params or {})).first()
        return None if row is None else row._mapping

    async def scalar(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Any:
        row = await self.row(statement, params)
        return None if row is None else next(iter(row.values()))

    async def execute(self, statement: Executable, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement for its effect; the number of rows it changed."""
        if self._driver is not None:
            sql, args = self._db.compiled(statement, params)
            status = await self._direct(self._driver.execute, sql, args)
            return int(status.rsplit(" ", 1)[-1]) if status and status[-1].isdigit() else 0
        return (await self.sa.execute(statement, params or {})).rowcount

    async def stream(self, statement: Executable, params: Mapping[str, Any] | None = None, *,
                     batch: int = 5000) -> AsyncIterator[Row]:
        """Rows through a server-side cursor (in a transaction of its own): flat memory at any size."""
        if self._driver is not None:
            sql, args = self._db.compiled(statement, params)
            async with self._driver.transaction():
                if self._db.pgbouncer:
                    # A cursor needs a named statement; asyncpg would name it __asyncpg_stmt_<n>__, a name
                    # another client may have left on this server connection. Freed before the commit.
                    name = _unique_statement_name()
                    prepared = await self._driver.prepare(sql, name=name)
                    async for record in prepared.cursor(*args, prefetch=batch):
                        yield record
                    await self._driver.execute(f'DEALLOCATE "{name}"')
                else:
                    async for record in self._driver.cursor(sql, *args, prefetch=batch):
                        yield record
            return
        result = await self.sa.stream(statement.execution_options(yield_per=batch), params or {})
        async for row in result:
            yield row._mapping

    async def _direct(self, call, sql: str, args: Sequence[Any]):
        left = deadline.remaining()
        try:
            if left is None:
                return await call(sql, *args)
            if left <= 0:
                raise DeadlineExceeded()
            return await call(sql, *args, timeout=left)  # asyncpg cancels it in PostgreSQL when it expires
        except asyncio.TimeoutError as exc:
            log.warning("statement cancelled: the request's budget ran out (503 deadline-exceeded)")
            raise DeadlineExceeded("the request's time budget ran out while the database worked") from exc
        except asyncpg.exceptions.IntegrityConstraintViolationError as exc:
            raise IntegrityError(sql, args, exc) from exc
        except _CONNECTION_LOST as exc:
            await greenlet_spawn(self._pooled.invalidate)  # the pool replaces it instead of handing it out again
            log.error("database connection lost (503 database-unavailable): %s", exc)
            raise DatabaseUnavailable() from exc
        except asyncpg.exceptions.PostgresError as exc:
            raise DBAPIError(sql, args, exc) from exc


class Database:
    """A service's engines (primary and optional read replica) and how its code gets a connection."""

    def __init__(self, settings: ServiceSettings) -> None:
        options = dict(service=settings.service_name, pool_size=settings.db_pool_size,
                       max_overflow=settings.db_max_overflow, pool_timeout=settings.db_pool_timeout,
                       statement_timeout_ms=settings.db_statement_timeout_ms, pgbouncer=settings.db_pgbouncer)
        self.pgbouncer = settings.db_pgbouncer
        self.statement_timeout_ms = settings.db_statement_timeout_ms
        self.engine = create_db_engine(settings.database_url, **options)
        self.read_engine = (create_db_engine(settings.database_read_url, **options)
                            if settings.database_read_url else self.engine)
        self.dialect = self.engine.dialect.name
        self._direct = self.dialect == "postgresql"
        self.service = settings.service_name
        # Where a direct connection is not possible (SQLite), reads and one-statement writes still autocommit.
        self._primary_read = self.engine if self._direct else self.engine.execution_options(
            isolation_level="AUTOCOMMIT")
        self._replica_read = self.read_engine if self._direct else self.read_engine.execution_options(
            isolation_level="AUTOCOMMIT")
        # The replica serves reads only while its measured lag is within max_lag (watch_replica); until the
        # first measurement, and whenever it fails, every read goes to the primary.
        self.has_replica = self.read_engine is not self.engine
        self.replica_max_lag = settings.db_read_max_lag
        self.replica_probe_interval = settings.db_read_probe_interval
        self.replica_lag: float | None = None
        self.replica_fresh = False
        self._one_statement = self.engine if self._direct else self.engine.execution_options(
            isolation_level="AUTOCOMMIT")
        self._compiled: dict[Any, Any] = {}
        # Fails fast while the database is unreachable: after enough "cannot connect / connection lost" in a
        # row of recent checkouts, every checkout answers 503 at once instead of waiting on a connect timeout.
        self.breaker = CircuitBreaker(
            f"{settings.service_name}-database", window=10, min_calls=settings.db_breaker_min_calls,
            failure_rate=0.5, reset_timeout=settings.db_breaker_reset_timeout, probes=1,
            on_state_change=lambda old, new: log.warning("database breaker: %s -> %s", old, new))
        # Readiness pings on a connection of its own: a replica whose request pool is saturated is busy, not
        # broken, and must stay in its load balancer (one pinged through the pool would time out and be pulled).
        self._ping_engine = create_db_engine(settings.database_url, service=f"{settings.service_name}-ready",
                                             pool_size=1, max_overflow=0, pool_timeout=settings.ready_timeout,
                                             pgbouncer=settings.db_pgbouncer)
        # The request pools' use on /metrics (bagtrack_db_pool_connections), read from them when Prometheus scrapes.
        capacity = settings.db_pool_size + settings.db_max_overflow
        DB_POOLS.track(self.service, "primary", self.engine, capacity)
        if self.has_replica:
            DB_POOLS.track(self.service, "replica", self.read_engine, capacity)

    @property
    def tombstone_hold(self) -> float:
        """How long a write's cache tombstones stand: the refill race's 2 s, or with a replica long enough that
        a code written within the replica's allowed lag is read from the primary (shared.cache.invalidate)."""
        return max(2.0, self.replica_max_lag + self.replica_probe_interval) if self.has_replica else 2.0

    @asynccontextmanager
    async def read(self, *, replica: bool = False) -> AsyncIterator[Conn]:
        """A connection for reads, in autocommit (each statement one round trip, seeing the latest commit).

        From the primary unless the caller says a replica may answer (`replica=True`: it knows nothing it reads
        was written within the replica's allowed lag — see services/scanning/lookup.py) and the replica's
        measured lag is within `db_read_max_lag`."""
        engine = self._replica_read if replica and self.replica_fresh else self._primary_read
        async with self._checkout(engine, direct=self._direct) as conn:
            yield conn

    async def watch_replica(self) -> None:
        """One lag measurement (a background job while a replica is configured): write a heartbeat on the
        primary, read the replica's copy; lag = the primary's clock now minus the newest beat the replica has.
        Any replication that copies rows carries it (streaming, logical, a delayed standby)."""
        try:
            async with self.one_statement() as conn:
                now = await conn.scalar(text(
                    "INSERT INTO replication_heartbeat (source, beat_at) VALUES (:source, now()) "
                    "ON CONFLICT (source) DO UPDATE SET beat_at = excluded.beat_at RETURNING beat_at"),
                    {"source": self.service})
            async with self.read_engine.connect() as conn:  # not through the request path's breaker
                seen = (await conn.execute(text("SELECT beat_at FROM replication_heartbeat WHERE source = :source"),
                                           {"source": self.service})).scalar()
            lag = None if seen is None else max(0.0, (now - seen).total_seconds())
        except Exception as exc:  # unmeasurable: the primary answers every read until it is measured again
            log.warning("replica lag unmeasurable (%s: %s); reading from the primary", type(exc).__name__, exc)
            lag = None
        fresh = lag is not None and lag <= self.replica_max_lag
        if fresh != self.replica_fresh:
            log.warning("replica %s (lag %s s, allowed %s s)", "serving reads" if fresh else "bypassed",
                        "unknown" if lag is None else round(lag, 2), self.replica_max_lag)
        self.replica_lag, self.replica_fresh = lag, fresh

    @asynccontextmanager
    async def one_statement(self) -> AsyncIterator[Conn]:
        """A primary connection in autocommit, for a write that is one (atomic) statement."""
        async with self._checkout(self._one_statement, direct=self._direct) as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A primary connection in a transaction: committed when the block ends, rolled back if it raises."""
        async with self._checkout(self.engine, direct=False) as conn:
            async with conn.sa.begin():
                yield conn

    def compiled(self, statement: Executable, params: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        """asyncpg's SQL and positional arguments for a Core statement, compiled once per statement shape
        (keyed by SQLAlchemy's own cache key, as its engine does)."""
        if not isinstance(statement, (Select, TextClause)):
            # INSERT/UPDATE may need Python-side column defaults, which only SQLAlchemy's execution applies.
            raise TypeError("direct connections run SELECTs and text(); other DML goes through db.transaction()")
        if len(self._compiled) > _COMPILED_CACHE_SIZE:
            self._compiled.clear()
        compiled, extracted, collected, _ = statement._compile_w_cache(
            self.engine.dialect, compiled_cache=self._compiled, column_keys=[])
        values = compiled.construct_params(params, escape_names=False, extracted_parameters=extracted,
                                           _collected_params=collected)
        sql, names, processors = compiled.string, compiled.positiontup, compiled._bind_processors
        if compiled.literal_execute_params or compiled.post_compile_params:
            expanded = compiled._process_parameters_for_postcompile(values)
            sql, names, processors = expanded.statement, expanded.positiontup, {**processors, **expanded.processors}
        return sql, [processors[name](values[name]) if name in processors else values[name] for name in names]

    async def check_session(self) -> None:
        """At start-up behind pgbouncer: warn when the server connections it hands out do not carry this
        service's statement_timeout (pgbouncer's connect_query sets it; the startup packet cannot)."""
        if not self.pgbouncer or self.dialect != "postgresql" or not self.statement_timeout_ms:
            return
        try:
            async with self.read() as conn:
                seen = await conn.scalar(text("SELECT current_setting('statement_timeout')"))
        except Exception as exc:  # noqa: BLE001 — the database may not be up yet: readiness says so, not this
            log.warning("statement_timeout behind pgbouncer not checked (%s: %s)", type(exc).__name__, exc)
            return
        if _milliseconds(seen) != self.statement_timeout_ms:
            log.warning("behind pgbouncer the server's statement_timeout is %s, not this service's %s ms: set it "
                        "with pgbouncer's connect_query for this database", seen, self.statement_timeout_ms)

    async def ping(self) -> None:
        """Raise if the primary database does not answer a trivial query (on the ping's own connection)."""
        try:
            async with self._ping_engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            if exc.connection_invalidated:  # the server restarted since the last ping: one fresh try
                async with self._ping_engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            else:
                raise

    async def dispose(self) -> None:
        DB_POOLS.forget(self.engine, self.read_engine)
        await self._ping_engine.dispose()
        await self.engine.dispose()
        if self.has_replica:
            await self.read_engine.dispose()

    @asynccontextmanager
    async def _checkout(self, engine: AsyncEngine, *, direct: bool) -> AsyncIterator[Conn]:
        """A pooled connection; "cannot connect at all" (refused, unreachable, timed out) is a clean 503, and
        an open breaker answers it without trying.

        A direct one is the pool's own connection (no SQLAlchemy Connection around it: ~100 µs less a checkout);
        asyncpg runs each of its statements in autocommit, and nothing ever begins a transaction on it."""
        left = deadline.remaining()
        if left is not None and left <= 0:
            raise DeadlineExceeded()  # whoever asked has given up: no connection, no statement
        breaker = self.breaker
        try:
            breaker.before_call()
        except CircuitOpen as exc:
            raise DatabaseUnavailable("database unavailable (circuit open)", retry_after=max(1, round(exc.retry_after)))
        try:
            handle = await (engine.raw_connection() if direct else engine.connect())
        except PoolTimeoutError:
            breaker.record_cancelled()  # busy, not broken: says nothing about the database
            raise
        except Exception as exc:  # noqa: BLE001 — the raw pool raises the driver's own errors, unwrapped
            # Refused, unreachable, timed out, too many connections, no such database, bad credentials: at
            # checkout every one of them means "cannot connect".
            breaker.record_failure()
            log.error("cannot connect to the database (503 database-unavailable): %s", exc)
            raise DatabaseUnavailable() from exc
        except BaseException:
            breaker.record_cancelled()
            raise
        lost = False
        try:
            yield Conn(self, pooled=handle) if direct else Conn(self, sa=handle)
        except DatabaseUnavailable:
            lost = True
            raise
        except DBAPIError as exc:
            lost = exc.connection_invalidated
            raise
        finally:
            if lost:
                breaker.record_failure()
            else:
                breaker.record_success()  # the database answered (an IntegrityError is an answer too)
            if direct:
                await greenlet_spawn(handle.close)
            else:
                await handle.close()
