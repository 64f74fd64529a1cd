"""SQL of the dashboard: its one table, the last good value of each part (no rules live here)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite

from services.dashboard.models import Part
from shared.db import Conn, Row
from shared.unit_of_work import UnitOfWork

parts = Part.__table__


async def load_part(conn: Conn, key: str) -> Row | None:
    return await conn.row(parts.select().where(parts.c.key == key))


async def save_part(work: UnitOfWork, *, key: str, source: str, payload: str, as_of: datetime,
                    refreshed_at: datetime) -> None:
    """Upsert a refreshed value (clearing any failure), unless the row already holds a later refresh: two replicas'
    write-behinds may land out of order."""
    dialect = postgresql if work.dialect == "postgresql" else sqlite
    statement = dialect.insert(parts).values(key=key, source=source, payload=payload, as_of=as_of,
                                             refreshed_at=refreshed_at, failed_at=None, failure=None)
    statement = statement.on_conflict_do_update(
        index_elements=[parts.c.key],
        set_={"source": source, "payload": payload, "as_of": as_of, "refreshed_at": refreshed_at,
              "failed_at": None, "failure": None},
        where=parts.c.refreshed_at <= statement.excluded.refreshed_at)
    await work.execute(statement)


async def note_failure(work: UnitOfWork, *, key: str, failed_at: datetime, failure: str) -> None:
    """Record a failed refresh on the row it leaves standing (no row: nothing good was ever held)."""
    await work.execute(update(parts).where(parts.c.key == key).values(failed_at=failed_at, failure=failure[:500]))
