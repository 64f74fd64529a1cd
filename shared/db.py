"""Engine and session factory: explicit pool sizes, pre-ping, a short pool timeout. Built in the app lifespan."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from shared.settings import ServiceSettings


def create_db_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 5,
    pool_timeout: float = 2.0,
    statement_timeout_ms: int = 0,
) -> Engine:
    """An engine sized explicitly; a pool that is exhausted fails in pool_timeout seconds, not 30."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            connect_args={"check_same_thread": False, "timeout": 5},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict = {"connect_timeout": 3, "application_name": "bagtrack"}
    if statement_timeout_ms:
        connect_args["options"] = f"-c statement_timeout={statement_timeout_ms}"
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=connect_args,
    )


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed during a write; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Database:
    """A service's engines (primary and optional read replica) and their session factories."""

    def __init__(self, settings: ServiceSettings) -> None:
        options = dict(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            statement_timeout_ms=settings.db_statement_timeout_ms,
        )
        self.engine = create_db_engine(settings.database_url, **options)
        self.read_engine = (
            create_db_engine(settings.database_read_url, **options) if settings.database_read_url else self.engine
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        self._autocommit_reads = self.read_engine.dialect.driver == "psycopg2"

    @contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[Session]:
        """A session that is rolled back unless the caller committed, and always closed.

        `read_only=True` reads from the replica when one is configured and, on PostgreSQL, runs in autocommit:
        no BEGIN and no ROLLBACK round trips around a lookup (each statement sees the latest commit).
        """
        session = (self._read_sessions if read_only else self._sessions)()
        raw = None
        try:
            if read_only and self._autocommit_reads:
                raw = session.connection().connection.dbapi_connection
                raw.autocommit = True  # psycopg2: a client-side switch, no round trip
            yield session
        except BaseException:
            session.rollback()
            raise
        finally:
            if raw is not None:
                try:
                    raw.autocommit = False  # back to transactions before the connection returns to the pool
                except Exception:  # a broken connection is discarded by the pool anyway
                    pass
            session.close()

    def ping(self) -> None:
        """Raise if the primary database does not answer a trivial query."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
