"""Request and response shapes of the auth service (the names are the public contract)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from shared.timeutil import UtcDateTime

Role = Literal["admin", "biller", "dispatcher"]
USERNAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
MAX_REFRESH_TOKEN = 256  # characters, in a body or in the refresh cookie


class StrictBody(BaseModel):
    """Unknown fields are a 422, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class LoginIn(StrictBody):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    refresh_cookie: bool = Field(False, description="deliver the refresh token as an httpOnly, SameSite=Strict "
                                 "cookie scoped to /api/v1/auth instead of in the body (the web app)")


class RefreshIn(StrictBody):
    refresh_token: str | None = Field(None, min_length=10, max_length=MAX_REFRESH_TOKEN,
                                      description="omitted: the refresh cookie set by a cookie login is used")


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str | None = Field(description="null when it travels in the refresh cookie")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class UserCreate(StrictBody):
    username: str = Field(min_length=3, max_length=32, pattern=USERNAME_PATTERN)
    email: EmailStr = Field(max_length=254)
    password: str = Field(min_length=1, max_length=256)
    role: Role
    dispatch_area: str | None = Field(None, max_length=64)


class UserUpdate(StrictBody):
    role: Role | None = None
    dispatch_area: str | None = Field(None, max_length=64)
    is_active: bool | None = None
    email: EmailStr | None = Field(None, max_length=254)
    unlock: bool = False


class PasswordChange(StrictBody):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    email: str
    role: Role
    dispatch_area: str | None
    is_active: bool
    created_at: UtcDateTime
    locked_until: UtcDateTime | None = None
    last_login_at: UtcDateTime | None = None


class PublicJwk(BaseModel):
    """One verifying key as GET /auth/jwks publishes it (RFC 8037): what every service's TokenVerifier loads.

    Literal values, so contracts/auth.json says exactly what a verifier of the previous release can use: another
    key type or algorithm is a breaking change there (shared.security accepts EdDSA only)."""

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str
    kid: str
    alg: Literal["EdDSA"]
    use: Literal["sig"]


class Jwks(BaseModel):
    keys: list[PublicJwk]


class Reference(BaseModel):
    """What forms and validation need from auth's configuration (GET /auth/reference, any signed-in user)."""

    roles: list[Role]
    areas: list[str] = Field(description="the configured dispatch areas")
    max_dispatchers_per_area: int
    dispatchers_per_area: dict[str, int] | None = Field(
        None, description="active dispatchers of each area; admins only (null for others)")
    password_rule: str
    username_pattern: str
