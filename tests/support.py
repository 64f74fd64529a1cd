"""What the suites need from this machine: PostgreSQL and Redis, found or (without CI) skipped with a reason."""
from __future__ import annotations

import os
import socket
from contextlib import closing, contextmanager
from typing import Iterator

import pytest
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(host: str, port: int) -> bool:
    with closing(socket.socket()) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require(service: str, host: str, port: int) -> None:
    """Skip the test when a server is absent on a laptop; fail it in CI, where it must be there."""
    if _reachable(host, port):
        return
    message = f"{service} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: the suites that need it must run)")
    pytest.skip(f"{message}; start it to run these tests")


def require_postgres() -> None:
    url = make_url(PG_URL)
    require("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)


def require_redis() -> None:
    url = make_url(REDIS_URL.replace("redis://", "postgresql://"))  # only host/port are read
    require("Redis", url.host or "127.0.0.1", url.port or 6379)


def pg_database_url(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_databases(prefix: str) -> None:
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    with engine.connect() as conn:
        names = conn.execute(text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": prefix + "%"}).scalars()
        for name in list(names):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def db_session(app) -> Iterator[Session]:
    """A plain (sync) session on an in-process app's own database, for arranging and checking rows in tests."""
    engine = create_engine(app.state.settings.database_url, poolclass=pool.NullPool)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()
