"""The one write path of every service: one short transaction, one commit, then the cache invalidations —
with idempotency as an option.

    written = await run_write(db, cache, action, idempotency=Idempotency.of(user_id, key, "scan-child", request))

`action(work)` applies the rules through `work.execute(...)` and names the cache entries it made stale with
`work.touch(...)`; nothing slow that is not the database (hashing, HTTP) runs inside it. The helper commits once
and invalidates only after the commit (before it, a concurrent reader could cache the old rows again; after it,
a short tombstone closes that window). A lost race (`LostRace`) is re-run on a fresh transaction.

Idempotency: the key and the write's result are stored in the same transaction as the write, so either both
land or neither; a retry with the key replays the stored result, and the same key with another request is a
422. A write that is ONE statement (`one_statement=True`) runs in autocommit and folds the key's lookup and its
record into that statement itself (`work.idempotency`, `work.replay`): one round trip for the whole write.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable, Generic, TypeVar

from sqlalchemy import (Column, DateTime, Integer, MetaData, SmallInteger, String, Table, Text, delete, insert, select,
                        tuple_)
from sqlalchemy.exc import DBAPIError, IntegrityError

from shared.cache import Cache, invalidate
from shared.db import RETRYABLE_SQLSTATES, Conn, Database, Row, sqlstate
from shared.errors import ProblemError, ServiceUnavailable
from shared.timeutil import utcnow

log = logging.getLogger("bagtrack.unit_of_work")

T = TypeVar("T")
ATTEMPTS = 3  # a write that loses a race twice in a row is contended; the third time it answers 503

# Every service that takes idempotency keys has this table in its own database (its migrations create it).
IDEMPOTENT_REQUESTS = Table(
    "idempotent_requests", MetaData(),
    Column("user_id", Integer, primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status_code", SmallInteger, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


# A write that is one PostgreSQL statement looks its key up in its first CTE and records it in its last, so the
# lookup, the write and the record are one round trip and one atomic statement. The casts fix every parameter's
# type (PostgreSQL cannot deduce one from `$1 IS NULL` or from a SELECT list).
PRIOR_CTE = """prior AS (
    SELECT fingerprint, response FROM idempotent_requests
    WHERE user_id = CAST(:idem_user AS integer) AND key = CAST(:idem_key AS varchar))"""


def record_cte(result: str, when: str) -> str:
    """The CTE that records `result` (a SQL expression of JSON text) under the key, when `when` holds."""
    return f"""recorded AS (
    INSERT INTO idempotent_requests (user_id, key, fingerprint, status_code, response, created_at)
    SELECT CAST(:idem_user AS integer), CAST(:idem_key AS varchar), CAST(:idem_fingerprint AS varchar), 200,
           {result}, now()
    WHERE CAST(:idem_key AS varchar) IS NOT NULL AND ({when}))"""


class KeyReused(ProblemError):
    status, slug = 422, "idempotency-key-reused"


class LostRace(Exception):
    """Raised by a write whose statement lost a race with a concurrent one: run it again from the start."""


@dataclass(frozen=True)
class Idempotency:
    """A write a client may retry: the caller, their key, and a fingerprint of what was asked."""

    user_id: int
    key: str
    fingerprint: str

    @classmethod
    def of(cls, user_id: int, key: str | None, operation: str, request: dict[str, Any]) -> "Idempotency | None":
        if not key:
            return None
        digest = hashlib.sha256(json.dumps([operation, request], sort_keys=True).encode()).hexdigest()
        return cls(user_id, key, digest)



@dataclass(frozen=True)
class Written(Generic[T]):
    result: T
    replayed: bool


class UnitOfWork:
    """What a write's rules see: its connection (and dialect), and the cache entries it touched."""

    def __init__(self, conn: Conn, idempotency: Idempotency | None, *, one_statement: bool = False) -> None:
        self.conn = conn
        self.dialect = conn.dialect
        self.idempotency = idempotency
        self.one_statement = one_statement  # the write must be one statement, folding its key in (autocommit)
        self.touched: set[str] = set()
        self.replayed: Any = None

    async def rows(self, statement, params: dict[str, Any] | None = None) -> list[Row]:
        return await self.conn.rows(statement, params)

    async def row(self, statement, params: dict[str, Any] | None = None) -> Row | None:
        return await self.conn.row(statement, params)

    async def scalar(self, statement, params: dict[str, Any] | None = None) -> Any:
        return await self.conn.scalar(statement, params)

    async def execute(self, statement, params: dict[str, Any] | None = None) -> int:
        """Run a statement for its effect; the number of rows it changed."""
        return await self.conn.execute(statement, params)

    def idempotency_params(self) -> dict[str, Any]:
        """Bind parameters of PRIOR_CTE and record_cte() (all None when the write carries no key)."""
        i = self.idempotency
        return {"idem_user": i and i.user_id, "idem_key": i and i.key, "idem_fingerprint": i and i.fingerprint}

    def touch(self, *cache_keys: str) -> None:
        """Note cache entries that this write makes stale (invalidated after the commit)."""
        self.touched.update(cache_keys)

    def replay(self, fingerprint: str | None, stored: str | None) -> Any:
        """What a one-statement write found already recorded under its key: the first result to answer with
        (None if there was none); a 422 when the key was used for a different request."""
        if fingerprint is None or self.idempotency is None:
            return None
        self.replayed = _stored_result(self.idempotency, fingerprint, stored)
        return self.replayed


async def run_write(db: Database, cache: Cache, action: Callable[[UnitOfWork], Awaitable[T]], *,
                    idempotency: Idempotency | None = None, one_statement: bool = False) -> Written[T]:
    """Run `action` as one transaction (or one autocommit statement), commit once, then invalidate."""
    for _ in range(ATTEMPTS):
        try:
            async with (db.one_statement() if one_statement else db.transaction()) as conn:
                work = UnitOfWork(conn, idempotency, one_statement=one_statement)
                if idempotency and not one_statement:
                    prior = await _find(work, idempotency)
                    if prior is not None:
                        return Written(prior, True)
                result = await action(work)
                if work.replayed is not None:
                    return Written(work.replayed, True)
                if idempotency and not one_statement:
                    await work.execute(insert(IDEMPOTENT_REQUESTS).values(
                        user_id=idempotency.user_id, key=idempotency.key, fingerprint=idempotency.fingerprint,
                        status_code=200, response=json.dumps(result), created_at=utcnow()))
            # The block committed when it ended (a raise inside it rolls back instead).
        except LostRace:
            continue
        except DBAPIError as exc:
            if sqlstate(exc) in RETRYABLE_SQLSTATES:  # a deadlock victim, rolled back by the server: run again
                log.warning("write re-run after %s", type(getattr(exc, "orig", exc)).__name__)
                continue
            if not isinstance(exc, IntegrityError):
                raise
            if idempotency and on_idempotency_key(exc):
                continue  # the same request, sent twice at once, committed first: replay it next time round
            raise
        await invalidate(cache, work.touched, hold=db.tombstone_hold)
        return Written(result, False)
    raise ServiceUnavailable("too many concurrent changes to the same bag; retry", retry_after=1)


PURGE_BATCH = 5000


async def write_in_batches(db: Database, cache: Cache, one_batch: Callable[[UnitOfWork], Awaitable[int]],
                           *, batch: int = PURGE_BATCH) -> int:
    """Run `one_batch` — a write touching at most `batch` rows that says how many it touched — each time in a unit
    of work of its own, until a batch comes back short; how many rows in all.

    For purges: one DELETE of a whole backlog would hold its locks and its WAL for as long as the backlog takes
    (after an outage, or on a busy day, a long transaction in the middle of the shift's writes)."""
    total = 0
    while True:
        done = (await run_write(db, cache, one_batch)).result
        total += done
        if done < batch:
            return total


async def purge_idempotency_keys(db: Database, cache: Cache, before: datetime, *, batch: int = PURGE_BATCH) -> int:
    """Forget keys older than `before` (retries come within seconds, not days), `batch` rows per transaction."""
    table = IDEMPOTENT_REQUESTS
    oldest = select(table.c.user_id, table.c.key).where(table.c.created_at < before).limit(batch)

    async def one_batch(work: UnitOfWork) -> int:
        return await work.execute(delete(table).where(tuple_(table.c.user_id, table.c.key).in_(oldest)))

    return await write_in_batches(db, cache, one_batch, batch=batch)


async def recorded(db: Database, idempotency: Idempotency | None) -> Any:
    """The first answer stored under a key, or None: for a write that must ask another service before its
    transaction, so a retry is answered without asking again (the write itself still records the key)."""
    if idempotency is None:
        return None
    async with db.read() as conn:
        return await _find(conn, idempotency)


async def _find(work: UnitOfWork | Conn, idempotency: Idempotency) -> Any:
    row = await work.row(
        select(IDEMPOTENT_REQUESTS.c.fingerprint, IDEMPOTENT_REQUESTS.c.response)
        .where(IDEMPOTENT_REQUESTS.c.user_id == idempotency.user_id, IDEMPOTENT_REQUESTS.c.key == idempotency.key))
    return None if row is None else _stored_result(idempotency, row["fingerprint"], row["response"])


def _stored_result(idempotency: Idempotency, fingerprint: str, stored: str | None) -> Any:
    if fingerprint != idempotency.fingerprint:
        raise KeyReused(f"scan_id / Idempotency-Key {idempotency.key!r} was already used for a different request")
    return json.loads(stored)


def on_idempotency_key(exc: IntegrityError) -> bool:
    """Whether the violation is a twin request's key record (the unit of work replays it), not the write's own.
    PostgreSQL names the primary key (idempotent_requests_pkey); SQLite names the table's columns."""
    return "idempotent_requests" in str(exc.orig)
