"""The auth service's rules: login with lockout, token rotation, user administration."""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.auth import repository as repo
from services.auth.config import Settings
from services.auth.keys import SigningKey
from services.auth.models import RefreshToken, User
from services.auth.passwords import Passwords, password_problems
from services.auth.schemas import TokenPair, UserCreate, UserUpdate
from shared.cache import Cache
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound, ProblemError, Unauthorized
from shared.ratelimit import hit
from shared.security import Principal
from shared.timeutil import as_utc, utcnow

log = logging.getLogger("bagtrack.auth")

INVALID_CREDENTIALS = "invalid username or password"


class AccountLocked(ProblemError):
    status, slug = 423, "account-locked"


@dataclass
class AuthContext:
    """What the rules need beyond a session; built once in the app lifespan."""

    settings: Settings
    passwords: Passwords
    keys: SigningKey
    cache: Cache


# --- login and tokens -------------------------------------------------------------------------------

def authenticate(*, session: Session, ctx: AuthContext, username: str, password: str, client_ip: str) -> TokenPair:
    """Check credentials under rate limits and lockout; on success issue a new token family."""
    settings = ctx.settings
    window = settings.login_limit_window
    hit(ctx.cache, f"login:ip:{client_ip}", limit=settings.login_limit_per_ip, window=window, what="login attempts from this address")
    hit(ctx.cache, f"login:user:{username.lower()}", limit=settings.login_limit_per_username, window=window, what="login attempts for this user")

    user = repo.get_user_by_username(session, username)
    # Unknown users are verified against a dummy hash: both paths cost one argon2 verification.
    password_ok = ctx.passwords.verify(user.password_hash if user else None, password)
    if user is None:
        raise Unauthorized(INVALID_CREDENTIALS)
    now = utcnow()
    locked_until = as_utc(user.locked_until)
    if locked_until and locked_until > now:
        minutes = max(1, round((locked_until - now).total_seconds() / 60))
        raise AccountLocked(f"account locked after repeated failed logins; try again in {minutes} min or ask an admin to unlock it")
    if not password_ok:
        repo.record_failed_login(session, user.id, threshold=settings.lockout_threshold,
                                 lock_until=now + timedelta(minutes=settings.lockout_minutes))
        session.commit()
        raise Unauthorized(INVALID_CREDENTIALS)
    if not user.is_active:
        raise Forbidden("account is deactivated; ask an admin")
    repo.record_successful_login(session, user, now)
    if ctx.passwords.needs_rehash(user.password_hash):
        user.password_hash = ctx.passwords.hash(password)
    pair = _issue_tokens(session, ctx, user, family_id=None, now=now)
    session.commit()
    return pair


def rotate_refresh_token(*, session: Session, ctx: AuthContext, raw_token: str) -> TokenPair:
    """Exchange a refresh token for a new pair. Presenting an already-rotated token revokes its family."""
    token = _find_refresh_token(session, raw_token)
    now = utcnow()
    if token is None:
        raise Unauthorized("invalid refresh token")
    if token.revoked_at is not None:
        raise Unauthorized("refresh token revoked")
    if token.used_at is not None or not repo.mark_refresh_used(session, token.id, now):
        repo.revoke_family(session, token.family_id, now)
        session.commit()
        log.warning("refresh token reuse detected; family revoked", extra={"fields": {"user_id": token.user_id}})
        raise Unauthorized("refresh token reuse detected; this login's sessions are revoked, log in again")
    if as_utc(token.expires_at) <= now:
        session.commit()
        raise Unauthorized("refresh token expired; log in again")
    user = repo.get_user(session, token.user_id)
    if user is None or not user.is_active:
        repo.revoke_family(session, token.family_id, now)
        session.commit()
        raise Unauthorized("account is not active")
    pair = _issue_tokens(session, ctx, user, family_id=token.family_id, now=now)
    session.commit()
    return pair


def logout(*, session: Session, principal: Principal, raw_token: str) -> None:
    """Revoke the refresh token's whole family (this login on every device it was rotated to)."""
    token = _find_refresh_token(session, raw_token)
    if token is None or token.user_id != principal.user_id:
        return  # logging out twice, or with a stranger's token, changes nothing and reveals nothing
    repo.revoke_family(session, token.family_id, utcnow())
    session.commit()


def _issue_tokens(session: Session, ctx: AuthContext, user: User, *, family_id: str | None, now: datetime) -> TokenPair:
    settings = ctx.settings
    claims = {
        "sub": str(user.id),
        "username": user.username,
        "role": user.role,
        "area": user.dispatch_area,
        "typ": "access",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + settings.access_token_ttl,
        "jti": uuid.uuid4().hex,
    }
    access = jwt.encode(claims, ctx.keys.private_key, algorithm="EdDSA", headers={"kid": ctx.keys.kid})
    token_id, secret = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    repo.add_refresh_token(session, RefreshToken(
        id=token_id, family_id=family_id or secrets.token_urlsafe(24), user_id=user.id,
        secret_hash=_digest(secret), expires_at=now + timedelta(seconds=settings.refresh_token_ttl),
    ))
    return TokenPair(access_token=access, refresh_token=f"{token_id}.{secret}", expires_in=settings.access_token_ttl)


def _find_refresh_token(session: Session, raw_token: str) -> RefreshToken | None:
    token_id, _, secret = raw_token.partition(".")
    if not token_id or not secret or len(token_id) > 43:
        return None
    token = repo.get_refresh_token(session, token_id)
    if token is None or not hmac.compare_digest(token.secret_hash, _digest(secret)):
        return None
    return token


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# --- users --------------------------------------------------------------------------------------------

def create_user(*, session: Session, ctx: AuthContext, user_in: UserCreate) -> User:
    area = _checked_area(ctx, user_in.role, user_in.dispatch_area)
    _check_password(user_in.password)
    if repo.username_taken(session, user_in.username):
        raise Conflict(f"username {user_in.username!r} is taken")
    if repo.email_taken(session, user_in.email):
        raise Conflict(f"email {user_in.email!r} is already registered")
    if area:
        _check_dispatcher_room(session, ctx, area, exclude_id=None)
    user = User(
        username=user_in.username, username_key=user_in.username.lower(), email=user_in.email.lower(),
        password_hash=ctx.passwords.hash(user_in.password), role=user_in.role, dispatch_area=area,
        is_active=True, failed_logins=0,
    )
    session.add(user)
    _commit_unique(session, "username or email already registered")
    return user


def update_user(*, session: Session, ctx: AuthContext, actor: Principal, user_id: int, changes: UserUpdate) -> User:
    user = get_user(session=session, user_id=user_id)
    fields = changes.model_fields_set
    new_role = changes.role if "role" in fields and changes.role else user.role
    if new_role != user.role and actor.user_id == user.id:
        raise Forbidden("you cannot change your own role")
    new_active = changes.is_active if "is_active" in fields and changes.is_active is not None else user.is_active
    area_given = "dispatch_area" in fields
    area = changes.dispatch_area if area_given else (user.dispatch_area if new_role == "dispatcher" else None)
    area = _checked_area(ctx, new_role, area)

    if user.role == "admin" and user.is_active and (new_role != "admin" or not new_active):
        _check_not_last_admin(session, "demote or deactivate")
    if new_role == "dispatcher" and new_active and (user.role != "dispatcher" or area != user.dispatch_area or not user.is_active):
        _check_dispatcher_room(session, ctx, area, exclude_id=user.id)
    if "email" in fields and changes.email and changes.email.lower() != user.email:
        if repo.email_taken(session, changes.email, exclude_id=user.id):
            raise Conflict(f"email {changes.email!r} is already registered")
        user.email = changes.email.lower()

    identity_changed = (new_role, area, new_active) != (user.role, user.dispatch_area, user.is_active)
    user.role, user.dispatch_area, user.is_active = new_role, area, new_active
    if changes.unlock:
        user.failed_logins, user.locked_until = 0, None
    if identity_changed:
        # Sessions carry the old role/area until their next refresh; a deactivated user gets none.
        if not new_active:
            repo.revoke_user_tokens(session, user.id, utcnow())
    _commit_unique(session, "email already registered")
    return user


def delete_user(*, session: Session, actor: Principal, user_id: int) -> None:
    user = get_user(session=session, user_id=user_id)
    if user.id == actor.user_id:
        raise Conflict("you cannot delete your own account")
    if user.role == "admin" and user.is_active:
        _check_not_last_admin(session, "delete")
    session.delete(user)
    session.commit()


def change_password(*, session: Session, ctx: AuthContext, principal: Principal, current: str, new: str) -> None:
    user = repo.get_user(session, principal.user_id)
    if user is None:
        raise Unauthorized("account no longer exists")
    if not ctx.passwords.verify(user.password_hash, current):
        raise Forbidden("current password is wrong")
    _check_password(new)
    if new == current:
        raise InvalidInput("the new password must differ from the current one")
    user.password_hash = ctx.passwords.hash(new)
    repo.revoke_user_tokens(session, user.id, utcnow())  # every other session must log in again
    session.commit()


def get_user(*, session: Session, user_id: int) -> User:
    user = repo.get_user(session, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def ensure_first_admin(*, session: Session, ctx: AuthContext, username: str, password: str, email: str | None) -> User | None:
    """Create the first admin if no admin exists yet; None when one already does."""
    if repo.any_admin(session):
        return None
    user_in = UserCreate(username=username, email=email or f"{username.lower()}@bagtrack.example.com",
                         password=password, role="admin")
    try:
        return create_user(session=session, ctx=ctx, user_in=user_in)
    except Conflict:
        session.rollback()  # another replica created it first
        return None


def _checked_area(ctx: AuthContext, role: str, area: str | None) -> str | None:
    if role != "dispatcher":
        if area:
            raise InvalidInput("dispatch_area applies only to dispatchers")
        return None
    if not area:
        raise InvalidInput("dispatchers need a dispatch_area")
    return ctx.settings.known_area(area)


def _check_password(password: str) -> None:
    problems = password_problems(password)
    if problems:
        raise InvalidInput("password needs " + ", ".join(problems))


def _check_not_last_admin(session: Session, action: str) -> None:
    repo.serialize(session, "users:admins")
    if repo.count_active_admins(session) <= 1:
        raise Conflict(f"cannot {action} the last active admin")


def _check_dispatcher_room(session: Session, ctx: AuthContext, area: str, *, exclude_id: int | None) -> None:
    repo.serialize(session, f"users:area:{area}")
    cap = ctx.settings.max_dispatchers_per_area
    if repo.count_active_dispatchers(session, area, exclude_id=exclude_id) >= cap:
        raise Conflict(f"area {area!r} already has {cap} active dispatchers")


def _commit_unique(session: Session, message: str) -> None:
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(message) from exc
