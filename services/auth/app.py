"""Auth service: users, roles, login with lockout, rotated refresh tokens, JWKS."""
from __future__ import annotations

import logging

import anyio
from fastapi import FastAPI
from pydantic import ValidationError

from services.auth import service
from services.auth.api import auth, users
from services.auth.config import Settings
from services.auth.keys import SigningKey
from services.auth.passwords import Passwords
from shared.app import create_service_app
from shared.errors import ProblemError

log = logging.getLogger("bagtrack.auth")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_service_app(
        settings,
        title="bagtrack auth",
        routers=[auth.router, users.router],
        on_startup=[_build_context, _first_admin],
        # Auth verifies its own tokens with the key it holds: no HTTP call to itself.
        jwks_source=lambda app: _local_jwks(app),
    )


def _local_jwks(app: FastAPI):
    async def source() -> dict:
        return app.state.auth.keys.jwks()

    return source


async def _build_context(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    passwords = await anyio.to_thread.run_sync(lambda: Passwords(
        time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism, max_concurrent=settings.max_concurrent_hashes,
    ))
    app.state.auth = service.AuthContext(settings=settings, passwords=passwords,
                                         keys=SigningKey.load(settings), cache=app.state.cache)


async def _first_admin(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    if not (settings.admin_username and settings.admin_password):
        return

    def create() -> None:
        try:
            with app.state.db.session() as session:
                user = service.ensure_first_admin(session=session, ctx=app.state.auth, username=settings.admin_username,
                                                  password=settings.admin_password.get_secret_value(),
                                                  email=settings.admin_email)
        except ProblemError as exc:
            raise RuntimeError(f"cannot create the first admin from BAGTRACK_ADMIN_*: {exc.detail}") from exc
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise RuntimeError(f"cannot create the first admin from BAGTRACK_ADMIN_*: {reasons}") from exc
        if user:
            log.info("created first admin %r from BAGTRACK_ADMIN_USERNAME", user.username)

    await anyio.to_thread.run_sync(create)
