"""The auth service's rules: login with failure throttles and lockout, token rotation, user administration.

Every write goes through the one unit of work (shared.unit_of_work.run_write). Password hashing runs before
or after it, never inside: a transaction (and its pooled connection) is held for milliseconds, not for an
argon2 hash, so a login storm cannot starve the other routes of connections.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import jwt
from fastapi import FastAPI
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from services.auth import repository as repo
from services.auth.config import Settings
from services.auth.keys import KeyRing, load_ring, seed_ring
from services.auth.passwords import PASSWORD_RULE, Passwords, password_problems
from services.auth.schemas import USERNAME_PATTERN, Reference, TokenPair, UserCreate, UserUpdate
from services.auth.throttle import FailureThrottle
from shared.cache import Cache
from shared.db import Database, Row
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound, ProblemError, Unauthorized
from shared.metrics import AUTH_LOCKOUTS
from shared.ratelimit import hit
from shared.security import ROLES, Principal
from shared.timeutil import as_utc, utcnow
from shared.unit_of_work import PURGE_BATCH, UnitOfWork, run_write, write_in_batches

log = logging.getLogger("bagtrack.auth")

INVALID_CREDENTIALS = "invalid username or password"


@dataclass
class AuthContext:
    """What the rules need beyond the request; built once at start-up."""

    settings: Settings
    db: Database
    cache: Cache
    passwords: Passwords
    keys: KeyRing  # replaced by reload_signing_keys every AUTH_KEY_RING_RELOAD_SECONDS
    login_failures: FailureThrottle = field(init=False)  # per (username, client address)
    password_change_failures: FailureThrottle = field(init=False)  # per user
    lockouts: Counter = field(init=False)  # bagtrack_auth_lockouts_total, exported as 0 from start-up

    def __post_init__(self) -> None:
        settings = self.settings
        self.lockouts = AUTH_LOCKOUTS.labels(settings.service_name)
        self.login_failures = FailureThrottle(
            self.cache, "login:fail", limit=settings.login_failures_per_client,
            window=settings.login_failure_window, what="failed logins")
        self.password_change_failures = FailureThrottle(
            self.cache, "password:fail", limit=settings.password_change_failures,
            window=settings.password_change_window, what="wrong current passwords")

    async def write(self, action, **options):
        """Run `action(work)` through the unit of work on auth's database and cache."""
        return (await run_write(self.db, self.cache, action, **options)).result


async def build_context(app: FastAPI) -> None:
    """Start-up hook: the auth context on app.state (the dummy hash is computed off the event loop), with the key
    ring read from the database (seeded with the configured key when empty)."""
    settings: Settings = app.state.settings
    passwords = await Passwords.create(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib,
                                       parallelism=settings.argon2_parallelism,
                                       max_concurrent=settings.max_concurrent_hashes)
    await seed_ring(app.state.db, app.state.cache, settings)
    ring = await load_ring(app.state.db)
    log.info("signing with key %s", ring.signing().kid)
    app.state.auth = AuthContext(settings, app.state.db, app.state.cache, passwords, ring)


async def reload_signing_keys(app: FastAPI) -> None:
    """Background job: read the key ring again, so a rotation reaches this replica long before its key signs."""
    ctx: AuthContext = app.state.auth
    ring = await load_ring(ctx.db)
    known = {k.kid for k in ctx.keys.keys}
    for key in ring.keys:
        if key.kid not in known:
            log.info("signing key %s published; signs from %s", key.kid, key.activates_at.isoformat())
    ctx.keys = ring


async def first_admin(app: FastAPI) -> None:
    """Start-up hook: the first admin from BAGTRACK_ADMIN_USERNAME / _PASSWORD, when both are set and no admin
    exists; a password the policy refuses stops the start with the reason."""
    settings: Settings = app.state.settings
    if not (settings.admin_username and settings.admin_password):
        return
    try:
        user = await ensure_first_admin(ctx=app.state.auth, username=settings.admin_username,
                                        password=settings.admin_password.get_secret_value(), email=settings.admin_email)
    except ProblemError as exc:
        raise RuntimeError(f"cannot create the first admin from BAGTRACK_ADMIN_*: {exc.detail}") from exc
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RuntimeError(f"cannot create the first admin from BAGTRACK_ADMIN_*: {reasons}") from exc
    if user:
        log.info("created first admin %r from BAGTRACK_ADMIN_USERNAME", user["username"])


# --- login and tokens -------------------------------------------------------------------------------

async def authenticate(*, ctx: AuthContext, username: str, password: str, client_ip: str) -> TokenPair:
    """Check credentials under the rate limit, the failure throttle and the lockout; on success issue a new token
    family.

    - Every attempt from one client address counts against login_limit_per_ip a login_limit_window (429).
    - Wrong passwords count per (lower-cased username, client address): after login_failures_per_client in
      login_failure_window that pair gets 429 + Retry-After until the window ends, whatever the password. The
      count, the answer and its headers are the same for known and unknown usernames; other clients are not
      affected, so nobody can shut an account out from their own address.
    - Wrong passwords for a known account also count across every client: lockout_threshold of them within
      lockout_window_minutes lock it (users.locked_until) for lockout_minutes, or until an admin unlocks it
      (PATCH /users/{id} {"unlock": true}, or `python -m services.auth.cli unlock --username X`).
    - A locked account answers exactly as an unknown username does at the same point: 401 "invalid username or
      password" for a right or a wrong password (one argon2 verification either way), and each attempt counts
      against the pair like a wrong password. The lock is visible only to admins (GET /users/{id}: locked_until).
    """
    settings = ctx.settings
    await hit(ctx.cache, "login:ip", client_ip, limit=settings.login_limit_per_ip,
              window=settings.login_limit_window, what="login attempts from this address")
    pair = f"{username.lower()}|{client_ip}"
    await ctx.login_failures.check(pair)

    async with ctx.db.read() as conn:
        user = await repo.get_user_by_username(conn, username)
    # Unknown users are verified against a dummy hash: both paths cost one argon2 verification.
    password_ok = await ctx.passwords.verify(user["password_hash"] if user else None, password)
    now = utcnow()
    if user is not None and not password_ok:
        async def count_failure(work: UnitOfWork) -> bool:
            return await repo.record_failed_login(
                work, user["id"], now, threshold=settings.lockout_threshold,
                window_start=now - timedelta(minutes=settings.lockout_window_minutes),
                lock_until=now + timedelta(minutes=settings.lockout_minutes))

        if await ctx.write(count_failure):  # counted once committed: a re-run transaction would count twice
            ctx.lockouts.inc()
    if user is None or not password_ok or _locked(user["locked_until"], now):
        await _refuse_login(ctx, pair)
    if not user["is_active"]:
        raise Forbidden("account is deactivated; ask an admin")
    new_hash = await ctx.passwords.hash(password) if ctx.passwords.needs_rehash(user["password_hash"]) else None

    async def sign_in(work: UnitOfWork) -> TokenPair | None:
        if not await repo.record_successful_login(work, user["id"], now, password_hash=new_hash):
            return None  # locked by a concurrent failure since we read the row: the lock stands
        return await _issue_tokens(work, ctx, user, family_id=None, now=now)

    pair_of_tokens = await ctx.write(sign_in)
    if pair_of_tokens is None:
        await _refuse_login(ctx, pair)
    return pair_of_tokens


async def _refuse_login(ctx: AuthContext, pair: str) -> None:
    """The one refusal of bad credentials, a locked account and an unknown username: counted, then 401."""
    await ctx.login_failures.failed(pair)
    raise Unauthorized(INVALID_CREDENTIALS)


def _locked(locked_until: datetime | None, now: datetime) -> bool:
    locked_until = as_utc(locked_until)
    return bool(locked_until and locked_until > now)


async def rotate_refresh_token(*, ctx: AuthContext, raw_token: str) -> TokenPair:
    """Exchange a refresh token for a new pair in the same family.

    A token presented again within refresh_reuse_leeway seconds of its first use is a retry whose answer was lost:
    it gets another fresh successor (only hashes are stored, so the first one cannot be re-sent), and every
    successor stays valid, whichever the client ends up holding. Presented again after the leeway, it is reuse: the
    whole family is revoked. Expired and revoked tokens are refused either way.
    """
    leeway = timedelta(seconds=ctx.settings.refresh_reuse_leeway)

    async def rotate(work: UnitOfWork) -> TokenPair | Unauthorized:
        # A refusal that revokes is *returned*, so the revocation commits before the 401 is raised.
        token = await _find_refresh_token(work, raw_token)
        if token is None:
            return Unauthorized("invalid refresh token")
        # One rotation or revocation of a family at a time; the row is read again under the lock, so every
        # decision below sees whatever a concurrent request committed first (a first use, a revocation).
        await repo.lock_family(work, token["family_id"])
        token = await repo.get_refresh_token(work.conn, token["id"])
        now = utcnow()
        if token is None:
            return Unauthorized("invalid refresh token")  # purged meanwhile
        if token["revoked_at"] is not None:
            return Unauthorized("refresh token revoked")
        expired = as_utc(token["expires_at"]) <= now
        if token["used_at"] is None:
            if expired:
                # Refused before it is claimed: a second try is "expired" again, not reuse that revokes the family.
                # (A rotated token replayed after its expiry is still reuse, below.)
                return Unauthorized("refresh token expired; log in again")
            if not await repo.mark_refresh_used(work, token["id"], now):
                # Claimed or revoked by a concurrent request after all: judge what it committed.
                token = await repo.get_refresh_token(work.conn, token["id"])
                if token is None or token["revoked_at"] is not None:
                    return Unauthorized("refresh token revoked")
        if token["used_at"] is not None:
            if now - as_utc(token["used_at"]) >= leeway:
                await repo.revoke_family(work, token["family_id"], now)
                log.warning("refresh token reuse detected; family revoked",
                            extra={"fields": {"user_id": token["user_id"]}})
                return Unauthorized("refresh token reuse detected; this login's sessions are revoked, log in again")
            if expired:  # a retry, but too late: nothing is revoked, the successor already issued stays valid
                return Unauthorized("refresh token expired; log in again")
            log.info("refresh retried within the leeway; another successor issued",
                     extra={"fields": {"user_id": token["user_id"]}})
        user = await repo.get_user(work.conn, token["user_id"])
        if user is None or not user["is_active"]:
            await repo.revoke_family(work, token["family_id"], now)
            return Unauthorized("account is not active")
        return await _issue_tokens(work, ctx, user, family_id=token["family_id"], now=now)

    outcome = await ctx.write(rotate)
    if isinstance(outcome, Unauthorized):
        raise outcome
    return outcome


async def purge_refresh_tokens(*, ctx: AuthContext, batch: int = PURGE_BATCH) -> int:
    """Delete refresh tokens expired or revoked more than refresh_purge_grace_hours ago, `batch` rows per
    transaction (a backlog never becomes one long transaction among the logins); how many went, in all.

    Used but unexpired tokens stay: they are what recognises a replay as reuse."""
    before = utcnow() - timedelta(hours=ctx.settings.refresh_purge_grace_hours)

    async def one_batch(work: UnitOfWork) -> int:
        return await repo.delete_dead_refresh_tokens(work, before, batch=batch)

    return await write_in_batches(ctx.db, ctx.cache, one_batch, batch=batch)


async def purge_old_refresh_tokens(app: FastAPI, *, batch: int = PURGE_BATCH) -> int:
    """Background job (hourly): purge_refresh_tokens on the app's auth context."""
    removed = await purge_refresh_tokens(ctx=app.state.auth, batch=batch)
    if removed:
        log.info("purged %d expired or revoked refresh tokens", removed)
    return removed


async def logout(*, ctx: AuthContext, principal: Principal, raw_token: str) -> None:
    """Revoke the refresh token's whole family (this login on every device it was rotated to)."""

    async def revoke(work: UnitOfWork) -> None:
        token = await _find_refresh_token(work, raw_token)
        if token is not None and token["user_id"] == principal.user_id:
            # Logging out twice, or with a stranger's token, changes nothing and reveals nothing.
            await repo.lock_family(work, token["family_id"])  # no successor being issued may outlive the logout
            await repo.revoke_family(work, token["family_id"], utcnow())

    await ctx.write(revoke)


async def _issue_tokens(work: UnitOfWork, ctx: AuthContext, user: Row, *, family_id: str | None,
                        now: datetime) -> TokenPair:
    settings = ctx.settings
    claims = {
        "sub": str(user["id"]), "username": user["username"], "role": user["role"], "area": user["dispatch_area"],
        "typ": "access", "iss": settings.jwt_issuer, "aud": settings.jwt_audience,
        "iat": int(now.timestamp()), "exp": int(now.timestamp()) + settings.access_token_ttl, "jti": uuid.uuid4().hex,
    }
    key = ctx.keys.signing(now)
    access = jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
    token_id, secret = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    await repo.add_refresh_token(work, dict(
        id=token_id, family_id=family_id or secrets.token_urlsafe(24), user_id=user["id"], secret_hash=_digest(secret),
        expires_at=now + timedelta(seconds=settings.refresh_token_ttl)))
    return TokenPair(access_token=access, refresh_token=f"{token_id}.{secret}", expires_in=settings.access_token_ttl)


async def _find_refresh_token(work: UnitOfWork, raw_token: str) -> Row | None:
    token_id, _, secret = raw_token.partition(".")
    if not token_id or not secret or len(token_id) > 43:
        return None
    token = await repo.get_refresh_token(work.conn, token_id)
    if token is None or not hmac.compare_digest(token["secret_hash"], _digest(secret)):
        return None
    return token


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# --- users --------------------------------------------------------------------------------------------

async def create_user(*, ctx: AuthContext, user_in: UserCreate) -> Row:
    area = _checked_area(ctx, user_in.role, user_in.dispatch_area)
    _check_password(user_in.password)
    password_hash = await ctx.passwords.hash(user_in.password)  # before the transaction, never inside it

    async def create(work: UnitOfWork) -> Row:
        if await repo.username_taken(work.conn, user_in.username):
            raise Conflict(f"username {user_in.username!r} is taken")
        if await repo.email_taken(work.conn, user_in.email):
            raise Conflict(f"email {user_in.email!r} is already registered")
        if area:
            await _check_dispatcher_room(work, ctx, area, exclude_id=None)
        return await repo.insert_user(work, dict(
            username=user_in.username, username_key=user_in.username.lower(), email=user_in.email.lower(),
            password_hash=password_hash, role=user_in.role, dispatch_area=area, is_active=True, failed_logins=0))

    return await _unique(ctx.write(create), "username or email already registered")


async def update_user(*, ctx: AuthContext, actor: Principal, user_id: int, changes: UserUpdate) -> Row:
    fields = changes.model_fields_set

    async def update(work: UnitOfWork) -> Row:
        user = await _existing_user(work.conn, user_id)
        new_role = changes.role if "role" in fields and changes.role else user["role"]
        if new_role != user["role"] and actor.user_id == user["id"]:
            raise Forbidden("you cannot change your own role")
        new_active = changes.is_active if "is_active" in fields and changes.is_active is not None else user["is_active"]
        area = changes.dispatch_area if "dispatch_area" in fields else (
            user["dispatch_area"] if new_role == "dispatcher" else None)
        area = _checked_area(ctx, new_role, area)
        if user["role"] == "admin" and user["is_active"] and (new_role != "admin" or not new_active):
            await _check_not_last_admin(work, "demote or deactivate")
        if new_role == "dispatcher" and new_active and (
                user["role"] != "dispatcher" or area != user["dispatch_area"] or not user["is_active"]):
            await _check_dispatcher_room(work, ctx, area, exclude_id=user["id"])
        values = {"role": new_role, "dispatch_area": area, "is_active": new_active}
        if "email" in fields and changes.email and changes.email.lower() != user["email"]:
            if await repo.email_taken(work.conn, changes.email, exclude_id=user["id"]):
                raise Conflict(f"email {changes.email!r} is already registered")
            values["email"] = changes.email.lower()
        if changes.unlock:
            values.update(failed_logins=0, failures_since=None, locked_until=None)
        if user["is_active"] and not new_active:
            # Sessions carry the old role/area until their next refresh; a deactivated user gets none.
            await repo.revoke_user_tokens(work, user["id"], utcnow())
        return await repo.update_user(work, user["id"], values)

    return await _unique(ctx.write(update), "email already registered")


async def delete_user(*, ctx: AuthContext, actor: Principal, user_id: int) -> None:
    async def delete(work: UnitOfWork) -> None:
        user = await _existing_user(work.conn, user_id)
        if user["id"] == actor.user_id:
            raise Conflict("you cannot delete your own account")
        if user["role"] == "admin" and user["is_active"]:
            await _check_not_last_admin(work, "delete")
        await repo.delete_user(work, user["id"])

    await ctx.write(delete)


async def unlock_user(*, ctx: AuthContext, username: str) -> Row:
    """Lift a lockout and reset the failure count (the shell's twin of PATCH /users/{id} {"unlock": true})."""

    async def unlock(work: UnitOfWork) -> Row:
        user = await repo.get_user_by_username(work.conn, username)
        if user is None:
            raise NotFound(f"user {username!r} not found")
        return await repo.update_user(work, user["id"], {"failed_logins": 0, "failures_since": None,
                                                         "locked_until": None})

    return await ctx.write(unlock)


async def change_password(*, ctx: AuthContext, principal: Principal, current: str, new: str) -> None:
    """Change your own password. Wrong current passwords are throttled per user (password_change_failures in
    password_change_window, then 429 + Retry-After) and never count towards the login lockout: a stolen access
    token can neither guess the password quickly nor lock its owner out."""
    await ctx.password_change_failures.check(str(principal.user_id))
    async with ctx.db.read() as conn:
        user = await repo.get_user(conn, principal.user_id)
    if user is None:
        raise Unauthorized("account no longer exists")
    if not await ctx.passwords.verify(user["password_hash"], current):
        await ctx.password_change_failures.failed(str(principal.user_id))
        raise Forbidden("current password is wrong")
    _check_password(new)
    if new == current:
        raise InvalidInput("the new password must differ from the current one")
    new_hash = await ctx.passwords.hash(new)

    async def change(work: UnitOfWork) -> None:
        await repo.update_user(work, user["id"], {"password_hash": new_hash})
        await repo.revoke_user_tokens(work, user["id"], utcnow())  # every other session must log in again

    await ctx.write(change)


async def get_user(*, ctx: AuthContext, user_id: int, primary: bool = False) -> Row:
    """A user by id (404 if none); `primary` reads the primary even when a replica is configured."""
    async with (ctx.db.one_statement() if primary else ctx.db.read()) as conn:
        return await _existing_user(conn, user_id)


async def reference(*, ctx: AuthContext, principal: Principal) -> Reference:
    """The roles, areas and rules the clients' forms are built from; admins also see each area's dispatchers."""
    settings = ctx.settings
    counts = None
    if principal.role == "admin":
        async with ctx.db.read() as conn:
            counts = await repo.count_dispatchers_by_area(conn)
        counts = {area: counts.get(area, 0) for area in settings.areas}
    return Reference(roles=list(ROLES), areas=list(settings.areas),
                     max_dispatchers_per_area=settings.max_dispatchers_per_area, dispatchers_per_area=counts,
                     password_rule=PASSWORD_RULE, username_pattern=USERNAME_PATTERN)


async def list_users(*, ctx: AuthContext, **filters) -> list[Row]:
    async with ctx.db.read() as conn:
        return await repo.list_users(conn, **filters)


async def ensure_first_admin(*, ctx: AuthContext, username: str, password: str, email: str | None) -> Row | None:
    """Create the first admin if no admin exists yet; None when one already does."""
    async with ctx.db.read() as conn:
        if await repo.any_admin(conn):
            return None
    user_in = UserCreate(username=username, email=email or f"{username.lower()}@bagtrack.example.com",
                         password=password, role="admin")
    try:
        return await create_user(ctx=ctx, user_in=user_in)
    except Conflict:
        return None  # another replica created it first


async def _existing_user(conn, user_id: int) -> Row:
    user = await repo.get_user(conn, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


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


async def _check_not_last_admin(work: UnitOfWork, action: str) -> None:
    await repo.serialize(work, "users:admins")
    if await repo.count_active_admins(work.conn) <= 1:
        raise Conflict(f"cannot {action} the last active admin")


async def _check_dispatcher_room(work: UnitOfWork, ctx: AuthContext, area: str, *, exclude_id: int | None) -> None:
    await repo.serialize(work, f"users:area:{area}")
    cap = ctx.settings.max_dispatchers_per_area
    if await repo.count_active_dispatchers(work.conn, area, exclude_id=exclude_id) >= cap:
        raise Conflict(f"area {area!r} already has {cap} active dispatchers")


async def _unique(write, message: str) -> Row:
    """Await a write whose insert or update may break a unique index: that is a 409, not a 500."""
    try:
        return await write
    except IntegrityError as exc:
        raise Conflict(message) from exc
