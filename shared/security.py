"""Access-token verification against auth's published keys (JWKS), fetched once and cached.

No call to auth and no database read per request: the signature, issuer, audience and expiry are
checked locally. An unknown key id triggers at most one JWKS refresh per `min_refresh` seconds: auth publishes
a new key longer than that before it signs with it (services/auth/keys.py), so a verifier whose keys predate the
new one has waited out `min_refresh` by the time it first sees its kid, and refetches.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Awaitable, Callable

import jwt
from fastapi import Depends, Request

from shared.errors import DependencyUnavailable, Forbidden, Unauthorized

if TYPE_CHECKING:
    from shared.http import ResilientClient

log = logging.getLogger("bagtrack.security")

ALGORITHMS = ("EdDSA",)  # fixed: never taken from the token header
ROLES = ("admin", "biller", "dispatcher")
# An access token is ~500 characters; anything far longer is refused before it is parsed or remembered
# (the gateway refuses an Authorization header past GATEWAY_MAX_AUTHORIZATION_BYTES before this).
MAX_TOKEN_CHARS = 4096
# Seconds of clock skew allowed on `exp` and `iat`: a token verifies until exp + LEEWAY.
LEEWAY = 5.0


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
    """Verifies access tokens, remembering each verified token until it expires.

    An Ed25519 check costs ~0.17 ms here and a scanner sends the same token every second for 15 minutes.
    The memo is keyed by the normalised token (what follows the scheme, whitespace stripped), never by the
    raw header: padding `Bearer` with a megabyte of spaces must not pin a megabyte per entry. A tampered
    token is a different key, a token longer than MAX_TOKEN_CHARS is refused before the memo is looked at,
    and an entry dies at the token's `exp`, so the memo accepts nothing the verifier would refuse, except a
    token signed by a key removed from the JWKS since, which the key cache itself also keeps trusting until
    it refreshes.
    """

    def __init__(self, *, issuer: str, audience: str, jwks_source: JwksSource, cache_seconds: float = 600.0,
                 min_refresh: float = 5.0, leeway: float = LEEWAY, memo_size: int = 50_000) -> None:
        self.issuer = issuer
        self.audience = audience
        self._source = jwks_source
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._cache_seconds = cache_seconds
        self._min_refresh = min_refresh
        self._leeway = leeway
        self._refresh_lock = asyncio.Lock()
        self._memo: dict[str, tuple[float, Principal]] = {}
        self._memo_size = memo_size

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
                    raise DependencyUnavailable("cannot verify tokens: signing keys unavailable",
                                                dependency="auth") from exc
                log.warning("JWKS refresh failed, keeping cached keys: %s", exc)
                self._fetched_at = time.monotonic()

    async def warm_up(self) -> None:
        """Load the signing keys now (at start-up), so the first caller does not pay for the fetch and a
        process started while auth is briefly away still gets them as soon as it can. Never raises."""
        try:
            await self._refresh(force=False)
        except Exception as exc:
            log.info("signing keys not loaded at start-up (%s); will fetch on first use", type(exc).__name__)

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller named by an `Authorization: Bearer` value; Unauthorized (401) on any defect."""
        return (await self.authenticate_until(authorization))[0]

    async def authenticate_until(self, authorization: str | None) -> tuple[Principal, float]:
        """The caller and when their token expires (epoch seconds): what a long-lived answer (an event stream)
        needs to end itself when the token does."""
        token = bearer_token(authorization)
        hit = self._memo.get(token)
        if hit is not None and hit[0] > time.time():
            return hit[1], hit[0]
        principal, expires = await self._verify(token)
        if self._memo_size:
            self._remember(token, expires, principal)
        return principal, expires

    def _remember(self, token: str, expires: float, principal: Principal) -> None:
        if len(self._memo) >= self._memo_size:
            now = time.time()
            self._memo = {k: v for k, v in self._memo.items() if v[0] > now}
            if len(self._memo) >= self._memo_size:
                self._memo.clear()
        self._memo[token] = (expires, principal)

    async def _verify(self, token: str) -> tuple[Principal, float]:
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

    def decode(self, token: str, key: Any) -> tuple[Principal, float]:
        """The identity in a token whose signature `key` verifies, and when the token expires."""
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
            principal = Principal(int(claims["sub"]), str(claims["username"]), claims["role"], claims.get("area"))
            return principal, float(claims["exp"])
        except (KeyError, ValueError, TypeError) as exc:
            raise Unauthorized("access token lacks identity claims") from exc


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` value, whitespace stripped; Unauthorized otherwise."""
    if not authorization:
        raise Unauthorized("missing access token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized("expected 'Authorization: Bearer <token>'")
    token = token.strip()
    if not token:
        raise Unauthorized("expected 'Authorization: Bearer <token>'")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("access token too long")
    return token


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the verified caller."""
    return await request.app.state.verifier.authenticate(request.headers.get("authorization"))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the caller, if their role is one of `roles`; else 403."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"this action needs role {' or '.join(roles)}")
        return principal

    return dependency


async def fetch_jwks(auth: "ResilientClient") -> dict[str, Any]:
    """auth's published signing keys, through the auth client (its timeout and breaker apply)."""
    response = await auth.request("GET", "/auth/jwks")
    if response.status != 200:
        raise RuntimeError(f"JWKS fetch answered {response.status}")
    return response.json()
