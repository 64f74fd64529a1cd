"""SQL of the auth service. No rules here: those live in service.py."""
from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, insert, null, or_, select, update

from services.auth.models import RefreshToken, User
from shared.db import Conn, Row
from shared.unit_of_work import UnitOfWork

users, refresh_tokens = User.__table__, RefreshToken.__table__


async def get_user(conn: Conn, user_id: int) -> Row | None:
    return await conn.row(select(users).where(users.c.id == user_id))


async def get_user_by_username(conn: Conn, username: str) -> Row | None:
    return await conn.row(select(users).where(users.c.username_key == username.lower()))


async def username_taken(conn: Conn, username: str) -> bool:
    return await conn.scalar(select(users.c.id).where(users.c.username_key == username.lower())) is not None


async def email_taken(conn: Conn, email: str, *, exclude_id: int | None = None) -> bool:
    query = select(users.c.id).where(users.c.email == email.lower())
    if exclude_id is not None:
        query = query.where(users.c.id != exclude_id)
    return await conn.scalar(query) is not None


async def serialize(work: UnitOfWork, name: str) -> None:
    """Serialise read-check-write rules (last admin, dispatchers per area) across concurrent requests.

    PostgreSQL: a transaction-scoped advisory lock per rule. SQLite: every write transaction already holds the
    database's single write lock from its start (BEGIN IMMEDIATE), so the counting that follows sees every commit.
    """
    if work.dialect == "postgresql":
        await work.scalar(select(func.pg_advisory_xact_lock(zlib.crc32(name.encode()))))


async def count_active_admins(conn: Conn) -> int:
    return await conn.scalar(select(func.count()).where(users.c.role == "admin", users.c.is_active.is_(True))) or 0


async def any_admin(conn: Conn) -> bool:
    return await conn.scalar(select(users.c.id).where(users.c.role == "admin").limit(1)) is not None


_ACTIVE_DISPATCHER = (users.c.role == "dispatcher", users.c.is_active.is_(True))


async def count_active_dispatchers(conn: Conn, area: str, *, exclude_id: int | None = None) -> int:
    query = select(func.count()).where(*_ACTIVE_DISPATCHER, users.c.dispatch_area == area)
    if exclude_id is not None:
        query = query.where(users.c.id != exclude_id)
    return await conn.scalar(query) or 0


async def count_dispatchers_by_area(conn: Conn) -> dict[str, int]:
    query = (select(users.c.dispatch_area, func.count().label("n")).where(*_ACTIVE_DISPATCHER)
             .group_by(users.c.dispatch_area))
    return {row["dispatch_area"]: row["n"] for row in await conn.rows(query)}


async def list_users(conn: Conn, *, after_id: int | None, limit: int, role: str | None, area: str | None,
                     is_active: bool | None, q: str | None) -> list[Row]:
    query = select(users).order_by(users.c.id).limit(limit)
    if after_id is not None:
        query = query.where(users.c.id > after_id)
    if role:
        query = query.where(users.c.role == role)
    if area:
        query = query.where(users.c.dispatch_area == area)
    if is_active is not None:
        query = query.where(users.c.is_active.is_(is_active))
    if q:
        query = query.where(users.c.username_key.contains(q.lower(), autoescape=True))
    return await conn.rows(query)


async def insert_user(work: UnitOfWork, values: dict[str, Any]) -> Row:
    return await work.row(insert(users).values(**values).returning(*users.c))


async def update_user(work: UnitOfWork, user_id: int, values: dict[str, Any]) -> Row:
    return await work.row(update(users).where(users.c.id == user_id).values(**values).returning(*users.c))


async def delete_user(work: UnitOfWork, user_id: int) -> None:
    await work.execute(delete(users).where(users.c.id == user_id))


async def record_failed_login(work: UnitOfWork, user_id: int, now: datetime, *, threshold: int,
                              window_start: datetime, lock_until: datetime) -> bool:
    """Count a failure atomically in the account's current window; a window that began at or before
    `window_start` has run out, and this failure starts a new one. The failure that reaches the threshold locks the
    account (and restarts the count): True for that one. A failure that read the account before a concurrent one
    locked it counts nothing: the lock is set once, and no failure carries over to after it."""
    fresh = or_(users.c.failures_since.is_(None), users.c.failures_since <= window_start)
    count = case((fresh, 1), else_=users.c.failed_logins + 1)
    locks = count >= threshold
    remaining = await work.scalar(
        update(users)
        .where(users.c.id == user_id, _not_locked(now))
        .values(
            locked_until=case((locks, lock_until), else_=users.c.locked_until),
            failed_logins=case((locks, 0), else_=count),
            failures_since=case((locks, null()), (fresh, now), else_=users.c.failures_since),
        )
        .returning(users.c.failed_logins)
    )
    return remaining == 0  # the count restarts at 0 only when this failure locked (None: no row was updated)


async def record_successful_login(work: UnitOfWork, user_id: int, now: datetime, *,
                                  password_hash: str | None = None) -> bool:
    """Reset the failure count, unless the account was locked meanwhile (then False: the lock stands)."""
    values: dict[str, Any] = {"failed_logins": 0, "failures_since": None, "locked_until": None, "last_login_at": now}
    if password_hash:
        values["password_hash"] = password_hash
    return await work.execute(update(users).where(users.c.id == user_id, _not_locked(now)).values(**values)) == 1


def _not_locked(now: datetime):
    """No lock in force at `now`: never locked, or the lock has run out."""
    return or_(users.c.locked_until.is_(None), users.c.locked_until <= now)


async def add_refresh_token(work: UnitOfWork, values: dict[str, Any]) -> None:
    await work.execute(insert(refresh_tokens).values(**values))


async def get_refresh_token(conn: Conn, token_id: str) -> Row | None:
    return await conn.row(select(refresh_tokens).where(refresh_tokens.c.id == token_id))


async def mark_refresh_used(work: UnitOfWork, token_id: str, now: datetime) -> bool:
    """Claim a refresh token for rotation; False if another request already used or revoked it."""
    return await work.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.id == token_id, refresh_tokens.c.used_at.is_(None),
               refresh_tokens.c.revoked_at.is_(None))
        .values(used_at=now)
    ) == 1


async def lock_family(work: UnitOfWork, family_id: str) -> None:
    """Serialise every rotation and revocation of one token family (PostgreSQL: an advisory transaction lock;
    SQLite's write transactions are serial already). Without it, a successor inserted by a concurrent rotation
    could miss a revocation's UPDATE (its snapshot predates the insert) and outlive its revoked family."""
    await serialize(work, f"refresh:family:{family_id}")


async def delete_dead_refresh_tokens(work: UnitOfWork, before: datetime, *, batch: int) -> int:
    """Delete up to `batch` refresh tokens that expired or were revoked before `before`; how many went."""
    dead = (select(refresh_tokens.c.id)
            .where(or_(refresh_tokens.c.expires_at < before, refresh_tokens.c.revoked_at < before))
            .limit(batch))
    return await work.execute(delete(refresh_tokens).where(refresh_tokens.c.id.in_(dead)))


async def revoke_family(work: UnitOfWork, family_id: str, now: datetime) -> None:
    await work.execute(update(refresh_tokens)
                       .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
                       .values(revoked_at=now))


async def revoke_user_tokens(work: UnitOfWork, user_id: int, now: datetime) -> None:
    await work.execute(update(refresh_tokens)
                       .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
                       .values(revoked_at=now))
