"""Auth service settings (env prefix AUTH_, plus the BAGTRACK_ADMIN_* first-admin variables)."""
from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import PLACEHOLDER_SECRETS, ServiceSettings

class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_")

    service_name = "auth"

    # Ed25519 signing key (PEM) that seeds an empty key ring (services/auth/keys.py); after that the ring in the
    # database is what signs, and rotates. Required in production; in development a key is generated once under var/.
    jwt_private_key: SecretStr | None = None
    jwt_private_key_file: Path | None = None
    # Every replica reads the ring again this often (seconds), so all of them sign with the same current key.
    key_ring_reload_seconds: float = Field(2, gt=0, le=30)
    # A rotated-in key is published at once and signs this many seconds later; must exceed what a verifier may
    # be behind (min_activation_delay: 9 s by default; the rest is room for clock skew between the hosts).
    # `rotate-key --activate-in` may choose another delay above that minimum.
    key_activation_delay: float = Field(15, gt=0, le=3600)
    access_token_ttl: int = Field(900, ge=60, le=3600)
    refresh_token_ttl: int = Field(14 * 24 * 3600, ge=300)
    # A cookie login (the web app) gets its refresh token as an httpOnly, SameSite=Strict cookie on this path: the
    # public path of login/refresh/logout, so the browser sends it on those calls and nowhere else.
    refresh_cookie_path: str = Field("/api/v1/auth", pattern=r"^/[A-Za-z0-9/_.-]*$")
    # A refresh retried within this many seconds of the token's first use (its answer was lost: a dropped
    # connection, a timeout) gets another successor in the same family instead of revoking it as reuse; every
    # successor issued within the leeway stays valid. After it, a second use still revokes the family. 0: none.
    refresh_reuse_leeway: float = Field(30, ge=0, le=300)
    # Expired and revoked refresh tokens are deleted (hourly, in batches) once they have been expired or revoked
    # this many hours: until then a replay is still recognised as reuse, or answered "expired" / "revoked".
    refresh_purge_grace_hours: float = Field(24, ge=0)

    # Wrong passwords for one username from one client address (a pair) within the window (seconds) after which
    # that pair gets 429 + Retry-After until the window ends; known and unknown usernames alike.
    login_failures_per_client: int = Field(5, ge=1)
    login_failure_window: float = Field(900, gt=0)
    # The ceiling across every client: this many wrong passwords for one account within lockout_window_minutes lock
    # it for lockout_minutes (or until an admin unlocks it). A locked account answers like an unknown username.
    lockout_threshold: int = Field(50, ge=1)
    lockout_window_minutes: float = Field(60, gt=0)
    lockout_minutes: float = Field(15, gt=0)
    # Every login attempt from one client address (a shift may log in from one NAT address).
    login_limit_per_ip: int = Field(100, ge=1)
    login_limit_window: float = Field(60, gt=0)
    # Wrong current passwords on POST /users/me/password per user within the window (seconds) before 429.
    password_change_failures: int = Field(5, ge=1)
    password_change_window: float = Field(900, gt=0)
    max_dispatchers_per_area: int = Field(10, ge=1)

    # OWASP's argon2id minimum (m=19 MiB, t=2, p=1); hashing runs off the event loop, a few at a time.
    argon2_time_cost: int = Field(2, ge=1)
    argon2_memory_kib: int = Field(19_456, ge=8)
    argon2_parallelism: int = Field(1, ge=1)
    # Each hash in flight holds argon2_memory_kib resident. Hashing is CPU-bound and a pod has 1 CPU, so a third or
    # fourth concurrent hash adds 19 MiB each and no throughput (bench/auth_memory.py, 60 logins on 2 cores: 1.6 s
    # with 1, 1.2 s with 2, 1.1-1.2 s with 4; peak 122, 140, 178 MiB). The memory limits in deploy/ are sized
    # from this number: raise one, recompute the other.
    max_concurrent_hashes: int = Field(2, ge=1)

    admin_username: str | None = Field(None, validation_alias=AliasChoices("BAGTRACK_ADMIN_USERNAME"))
    admin_password: SecretStr | None = Field(None, validation_alias=AliasChoices("BAGTRACK_ADMIN_PASSWORD"))
    admin_email: str | None = Field(None, validation_alias=AliasChoices("BAGTRACK_ADMIN_EMAIL"))

    @property
    def jwks_max_age(self) -> int:
        """Cache-Control max-age of GET /auth/jwks: no longer than a replica's own copy of the ring may be old."""
        return int(self.key_ring_reload_seconds)

    @property
    def jwks_staleness(self) -> float:
        """How far behind the ring a fetched JWKS may be: a replica's copy (reloaded every key_ring_reload_seconds)
        plus a cache in between (the JWKS answer's max-age)."""
        return self.key_ring_reload_seconds + self.jwks_max_age

    @property
    def min_activation_delay(self) -> float:
        """A new key must be published longer than this before it signs: a verifier that fetched before it was
        visible then holds keys older than jwks_min_refresh when it first sees the new kid, so it refetches."""
        return self.jwks_min_refresh + self.jwks_staleness

    @model_validator(mode="after")
    def _activation_outlasts_verifiers(self) -> "Settings":
        if self.key_activation_delay <= self.min_activation_delay:
            raise ValueError(
                f"AUTH_KEY_ACTIVATION_DELAY ({self.key_activation_delay:g} s) must exceed JWKS_MIN_REFRESH "
                f"({self.jwks_min_refresh:g} s) + the JWKS staleness ({self.jwks_staleness:g} s: "
                "AUTH_KEY_RING_RELOAD_SECONDS and the answer's max-age), or a verifier may refuse a fresh token")
        return self

    @model_validator(mode="after")
    def _production_secrets(self) -> "Settings":
        if self.environment != "production":
            return self
        key = self.jwt_private_key.get_secret_value() if self.jwt_private_key else None
        if not self.jwt_private_key_file and (not key or key.strip().lower() in PLACEHOLDER_SECRETS):
            raise ValueError("AUTH_JWT_PRIVATE_KEY or AUTH_JWT_PRIVATE_KEY_FILE must be set when BAGTRACK_ENV=production")
        if self.admin_password is not None and self.admin_password.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("BAGTRACK_ADMIN_PASSWORD is a placeholder; set a real password")
        return self
