"""Alembic migrations per service, run as a step before servers start (never raced by replicas).

Usage: python -m shared.migrate auth [scanning billing dashboard]  (each service's settings decide its DB).
"""
from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, create_engine, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, ProgrammingError

from shared.topology import SERVICES

log = logging.getLogger("bagtrack.migrate")

# Any fixed number works; it serialises concurrent `migrate` runs against one PostgreSQL database.
_ADVISORY_LOCK_ID = 7_254_001


def alembic_config(service: str, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", f"services.{service}:migrations")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def ensure_database_exists(url: str) -> None:
    """Create the service's PostgreSQL database (or SQLite file's folder) on first run."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return
    if parsed.get_backend_name() != "postgresql":
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}).scalar()
            if not exists:
                try:
                    conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
                    log.info("created database %s", parsed.database)
                except (IntegrityError, ProgrammingError) as exc:
                    # Another migrator created it between the check and here (duplicate_database, or the
                    # catalogue's unique index when both got past the check at once): it exists, as wanted.
                    if getattr(exc.orig, "pgcode", None) not in ("42P04", "23505"):
                        raise
    finally:
        admin.dispose()


def upgrade(service: str, url: str, revision: str = "head") -> None:
    ensure_database_exists(url)
    command.upgrade(alembic_config(service, url), revision)


def run_migrations(metadata: MetaData) -> None:
    """Body of every service's migrations/env.py: online migrations, batch mode on SQLite."""
    url = context.config.get_main_option("sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    is_pg = engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=not is_pg)
        with context.begin_transaction():
            if is_pg:
                # Every revision runs in this one transaction, and its first statement takes a transaction-scoped
                # lock: a second migrator waits here, then reads the version the first committed. Being
                # transaction-scoped, it holds through pgbouncer in transaction mode too (a session lock would not).
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_ID})
            context.run_migrations()
        conn.commit()
    engine.dispose()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = argv or list(SERVICES)
    for name in names:
        if name not in SERVICES:
            print(f"unknown service {name!r}; choose from {', '.join(SERVICES)}", file=sys.stderr)
            return 2
        settings = importlib.import_module(f"services.{name}.config").Settings()
        upgrade(name, settings.database_url)
        print(f"migrated {name}: {make_url(settings.database_url).render_as_string(hide_password=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
