"""Init container of every service Deployment: wait until the migration Job has brought this service's
database to the Alembic head shipped in this image, then exit 0 so the server starts.

Replicas never run migrations themselves (the Job does, once); they only read the revision.
Usage: python wait_for_migrations.py <service>   (same env as the service: DATABASE_URL etc.)
"""
from __future__ import annotations

import importlib
import os
import sys
import time

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

sys.path.insert(0, os.environ.get("BAGTRACK_APP_DIR", "/app"))

from shared.migrate import alembic_config  # noqa: E402


def main(service: str, interval: float = 2.0) -> int:
    settings = importlib.import_module(f"services.{service}.config").Settings()
    url = settings.database_url
    heads = set(ScriptDirectory.from_config(alembic_config(service, url)).get_heads())
    while True:
        try:
            engine = create_engine(url, poolclass=pool.NullPool)
            try:
                with engine.connect() as conn:
                    current = set(MigrationContext.configure(conn).get_current_heads())
            finally:
                engine.dispose()
            if current == heads:
                print(f"{service}: database at head {sorted(heads)}", flush=True)
                return 0
            print(f"{service}: database at {sorted(current) or 'no revision'}, waiting for {sorted(heads)}", flush=True)
        except Exception as exc:  # the database may not be up yet: keep waiting, say why
            print(f"{service}: waiting for the database ({type(exc).__name__}: {exc})", flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: wait_for_migrations.py <service>")
    sys.exit(main(sys.argv[1], float(os.environ.get("WAIT_INTERVAL_SECONDS", "2"))))
