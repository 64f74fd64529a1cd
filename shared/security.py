"""Access-token verification against auth's published keys (JWKS), fetched once and cached.

No call to auth and no database read per request: the signature, issuer, audience and expiry are
checked locally. An unknown key id triggers at most one JWKS refresh per `min_refresh` seconds.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any, Awaitable, Callable

import jwt
from fastapi import Depends, Request

from shared.errors import Forbidden, ServiceUnavailable, Unauthorized

log = logging.getLogger("bagtrack.security")

ALGORITHMS = ("EdDSA",)  # fixed: never taken from the token header
ROLES = ("admin", "biller", "dispatcher")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as the access token says."""

    user_id: int
    username: str
    role: str
    dispatch_area: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


JwksSource = Callable[[], Awaitable[dict[str, Any]]]


class TokenVerifier:
    def __init__(self, *, issuer: str, audience: str, jwks_source: JwksSource,
                 cache_seconds: float = 600.0, min_refresh: float = 30.0, leeway: float = 5.0) -> None:
        self.issuer = issuer
        self.audience = audience
        self._source = jwks_source
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._cache_seconds = cache_seconds
        self._min_refresh = min_refresh
        self._leeway = leeway
        self._refresh_lock = asyncio.Lock()

    def load_jwks(self, jwks: dict[str, Any]) -> None:
        keys = {}
        for jwk in jwks.get("keys", []):
            if jwk.get("alg") in ALGORITHMS and jwk.get("kid"):
                keys[jwk["kid"]] = jwt.PyJWK.from_json(json.dumps(jwk)).key
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def _refresh(self, *, force: bool) -> None:
        async with self._refresh_lock:
            age = time.monotonic() - self._fetched_at
            if self._keys and age < (self._min_refresh if force else self._cache_seconds):
                return
            try:
                self.load_jwks(await self._source())
            except Exception as exc:
                if not self._keys:
                    log.warning("cannot fetch signing keys: %s", exc)
                    raise ServiceUnavailable("cannot verify tokens: signing keys unavailable") from exc
                log.warning("JWKS refresh failed, keeping cached keys: %s", exc)
                self._fetched_at = time.monotonic()

    async def verify(self, token: str) -> Principal:
        """Check a token's signature and claims; raise Unauthorized on any defect."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("malformed access token") from exc
        if header.get("alg") not in ALGORITHMS:
            raise Unauthorized("access token uses a forbidden algorithm")
        kid = header.get("kid")
        if time.monotonic() - self._fetched_at > self._cache_seconds:
            await self._refresh(force=False)
        if kid not in self._keys:
            await self._refresh(force=True)
        key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("access token signed by an unknown key")
        return self.decode(token, key)

    def decode(self, token: str, key: Any) -> Principal:
        try:
            claims = jwt.decode(
                token, key, algorithms=list(ALGORITHMS), audience=self.audience, issuer=self.issuer,
                leeway=self._leeway, options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("access token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid access token") from exc
        if claims.get("typ") != "access" or claims.get("role") not in ROLES:
            raise Unauthorized("not an access token")
        try:
            return Principal(int(claims["sub"]), str(claims["username"]), claims["role"], claims.get("area"))
        except (KeyError, ValueError) as exc:
            raise Unauthorized("access token lacks identity claims") from exc


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing access token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("expected 'Authorization: Bearer <token>'")
    return token.strip()


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the verified caller."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        token = bearer_token(request.headers.get("authorization"))
        principal = await request.app.state.verifier.verify(token)
        request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the caller, if their role is one of `roles`; else 403."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"this action needs role {' or '.join(roles)}")
        return principal

    return dependency
