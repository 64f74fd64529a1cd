"""Auth service: users, roles, login with failure throttles and lockout, rotated refresh tokens, JWKS."""
from __future__ import annotations

import logging

from fastapi import FastAPI

from services.auth.api import auth, users
from services.auth.config import Settings
from services.auth.passwords import unmap_hash_buffers_when_freed
from services.auth.service import build_context, first_admin, purge_old_refresh_tokens, reload_signing_keys
from shared.app import Job, create_service_app


log = logging.getLogger("bagtrack.auth")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = create_service_app(settings, title="bagtrack auth", routers=[auth.router, users.router],
                             on_startup=[build_context, first_admin],
                             jobs=[Job("purge refresh tokens", every=3600, run=purge_old_refresh_tokens,
                                       first_after=300),
                                   Job("reload signing keys", every=settings.key_ring_reload_seconds,
                                       run=reload_signing_keys)],
                             # Auth verifies its own tokens with the key it holds: no HTTP call to itself.
                             jwks_source=lambda app: _own_keys(app))
    if not unmap_hash_buffers_when_freed():  # before any hashing thread exists
        log.warning("not glibc: argon2 buffers may stay resident after hashing (see services/auth/passwords.py)")
    return app


def _own_keys(app: FastAPI):
    async def source() -> dict:
        return app.state.auth.keys.jwks()

    return source
