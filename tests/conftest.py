"""Storage backends every database test runs against: SQLite + in-process cache, PostgreSQL + Redis."""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from tests.support import REDIS_URL, drop_pg_databases, pg_database_url, require_postgres, require_redis


@dataclass(frozen=True)
class Backend:
    name: str
    database_url: str | None  # a base URL; each service derives "<db>_<service>" from it (SQLite: None)
    redis_url: str | None
    var_dir: str


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request, tmp_path_factory) -> Backend:
    var_dir = str(tmp_path_factory.mktemp(f"var-{request.param}"))
    if request.param == "sqlite":
        return Backend("sqlite", None, None, var_dir)
    require_postgres()
    require_redis()
    prefix = f"bt_test_{os.getpid()}"
    request.addfinalizer(lambda: drop_pg_databases(prefix))
    return Backend("postgres", pg_database_url(prefix), REDIS_URL, var_dir)
