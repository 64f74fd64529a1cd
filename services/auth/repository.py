"""SQL of the auth service. No rules here: those live in service.py."""
from __future__ import annotations

import zlib
from datetime import datetime

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from services.auth.models import RefreshToken, User


def get_user(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def get_user_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username_key == username.lower()))


def username_taken(session: Session, username: str) -> bool:
    return session.scalar(select(User.id).where(User.username_key == username.lower())) is not None


def email_taken(session: Session, email: str, *, exclude_id: int | None = None) -> bool:
    query = select(User.id).where(User.email == email.lower())
    if exclude_id is not None:
        query = query.where(User.id != exclude_id)
    return session.scalar(query) is not None


def serialize(session: Session, name: str) -> None:
    """Serialise read-check-write rules (last admin, dispatchers per area) across concurrent requests.

    PostgreSQL: a transaction-scoped advisory lock per rule. SQLite: a write that matches no row still
    takes the database's single write lock, so the counting that follows sees every earlier commit.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(zlib.crc32(name.encode()))))
    else:
        session.execute(update(User).where(User.id == -1).values(failed_logins=User.failed_logins))


def count_active_admins(session: Session) -> int:
    return session.scalar(select(func.count()).where(User.role == "admin", User.is_active.is_(True))) or 0


def any_admin(session: Session) -> bool:
    return session.scalar(select(User.id).where(User.role == "admin").limit(1)) is not None


def count_active_dispatchers(session: Session, area: str, *, exclude_id: int | None = None) -> int:
    query = select(func.count()).where(User.role == "dispatcher", User.dispatch_area == area, User.is_active.is_(True))
    if exclude_id is not None:
        query = query.where(User.id != exclude_id)
    return session.scalar(query) or 0


def list_users(session: Session, *, after_id: int | None, limit: int, role: str | None, area: str | None,
               is_active: bool | None, q: str | None) -> list[User]:
    query = select(User).order_by(User.id).limit(limit)
    if after_id is not None:
        query = query.where(User.id > after_id)
    if role:
        query = query.where(User.role == role)
    if area:
        query = query.where(User.dispatch_area == area)
    if is_active is not None:
        query = query.where(User.is_active.is_(is_active))
    if q:
        query = query.where(User.username_key.contains(q.lower(), autoescape=True))
    return list(session.scalars(query))


def record_failed_login(session: Session, user_id: int, *, threshold: int, lock_until: datetime) -> None:
    """Count a failure atomically; the failure that reaches the threshold locks the account."""
    session.execute(
        update(User)
        .where(User.id == user_id)
        .values(
            locked_until=case((User.failed_logins + 1 >= threshold, lock_until), else_=User.locked_until),
            failed_logins=case((User.failed_logins + 1 >= threshold, 0), else_=User.failed_logins + 1),
        )
    )


def record_successful_login(session: Session, user: User, now: datetime) -> None:
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now


def add_refresh_token(session: Session, token: RefreshToken) -> None:
    session.add(token)


def get_refresh_token(session: Session, token_id: str) -> RefreshToken | None:
    return session.get(RefreshToken, token_id)


def mark_refresh_used(session: Session, token_id: str, now: datetime) -> bool:
    """Claim a refresh token for rotation; False if another request already used or revoked it."""
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token_id, RefreshToken.used_at.is_(None), RefreshToken.revoked_at.is_(None))
        .values(used_at=now)
    )
    return result.rowcount == 1


def revoke_family(session: Session, family_id: str, now: datetime) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def revoke_user_tokens(session: Session, user_id: int, now: datetime) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
